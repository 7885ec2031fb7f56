import os, sys, time, json, statistics
sys.path.insert(0, "/work/main/bench")
import bench_search_overhead as b
from deepseek_ray.config import SearchConfig
from deepseek_ray.hpo import SearchSpace, run_trials
LOG = "/tmp/gaps.log"
def objective(params, seed):
    t0 = time.time(); time.sleep(0.2)
    with open(LOG, "a") as f: f.write(f"{os.getpid()} {t0} {time.time()}\n")
    yield {"loss": b.loss(params["x"], params["y"], 1)}
def analyse(name, t_call, t_ret):
    rows = [l.split() for l in open(LOG)]
    by = {}
    for pid, s, e in rows: by.setdefault(pid, []).append((float(s), float(e)))
    gaps = [b2[0]-a[1] for v in by.values() for a, b2 in zip(sorted(v), sorted(v)[1:])]
    first = min(float(s) for _, s, _ in rows) - t_call; last = t_ret - max(float(e) for *_, e in rows)
    print(f"{name}: wall {t_ret-t_call:.2f} first-start {first:.2f} end {last:.2f} actors {len(by)} gap median {statistics.median(gaps)*1e3:.0f} ms sum {sum(gaps):.2f}", flush=True)
storage = b.quiet_search_session("gaps-")
for rep in range(2):
    open(LOG, "w").close(); b.idle()
    config = SearchConfig(strategy={"type": "tpe", "n_startup_trials": 10}, scheduler={"type": "fifo", "max_t": 1}, metric="loss", mode="min", budget={"trials": 40}, concurrency=2)
    t = time.time(); run_trials(objective, SearchSpace.from_mapping(b.SPACE), config, name=f"o{rep}", storage_path=storage); analyse("ours", t, time.time())
    open(LOG, "w").close(); b.idle()
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch
    import optuna
    def trainable(config):
        t0 = time.time(); time.sleep(0.2)
        with open(LOG, "a") as f: f.write(f"{os.getpid()} {t0} {time.time()}\n")
        tune.report({"loss": b.loss(config["x"], config["y"], 1)})
    tuner = tune.Tuner(trainable, param_space={"x": tune.uniform(-5, 5), "y": tune.loguniform(1e-4, 1.0)},
        tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=OptunaSearch(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10)), num_samples=40, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(name=f"p{rep}", storage_path=storage, verbose=0))
    t = time.time(); tuner.fit(); analyse("plain", t, time.time())
