"""Search and training on the session's Ray cluster, in-process."""

from __future__ import annotations

import json

import torch

from deepseek_ray.config import SearchConfig
from deepseek_ray.data import load_dataset
from deepseek_ray.hpo import HPOConfig, run_search
from deepseek_ray.nas import NASConfig
from deepseek_ray.train import TrainSettings, train


def digits(limit: int | None = 600):
    return load_dataset("digits", seed=0, limit=limit)


def test_search_runs_each_configuration_as_its_own_trial(ray_address, tiny_config_path, tmp_path):
    lines: list[str] = []
    search = HPOConfig(space=tiny_config_path.parent / "tiny_space.yaml", strategy={"type": "random"},
                       scheduler={"type": "fifo", "max_t": 2}, budget={"trials": 4}, concurrency=2)
    result = run_search(search, digits(), name="search-test", storage_path=tmp_path, seed=1, progress=lines.append)
    assert len(result.trials) == 4 and len({t["trial_id"] for t in result.trials}) == 4
    assert all(t["epochs"] == 2 and t["status"] == "TERMINATED" for t in result.trials)
    assert result.best_metric == max(t["val_accuracy"] for t in result.trials)
    assert result.stop_reason.startswith("trial budget")
    assert len(lines) == 4 and "best" in lines[-1]


def test_nas_config_is_run_by_the_runner(ray_address, tmp_path):
    config = NASConfig(search_space=["conv3x3", "identity"], budget=2, metric="accuracy", cells=[1, 2], channels=8,
                       scheduler={"type": "fifo", "max_t": 1})
    result = run_search(config, digits(), name="nas-test", storage_path=tmp_path)
    assert len(result.trials) == 2 and result.metric == "val_accuracy"
    assert result.best_architecture.startswith("c8|")


def test_epoch_budget_stops_the_search(ray_address, tiny_config_path, tmp_path):
    search = SearchConfig(space=tiny_config_path.parent / "tiny_space.yaml", strategy={"type": "random"},
                          scheduler={"type": "fifo", "max_t": 2}, budget={"trials": 20, "epochs": 3}, concurrency=1)
    result = run_search(search, digits(), name="budget-test", storage_path=tmp_path)
    assert result.stop_reason.startswith("epoch budget") and len(result.trials) < 20


def settings(**overrides) -> TrainSettings:
    base = dict(model_spec={"type": "cellnet", "arch": "c8|conv3x3", "in_channels": 1, "num_classes": 10}, epochs=2,
                lr=5e-3, batch_size=32, patience=None, augment=[{"type": "random_shift", "pixels": 1}], seed=3)
    return TrainSettings(**{**base, **overrides})


def test_same_seed_same_weights_on_two_workers(ray_address, tmp_path):
    data = digits()
    first = train(settings(), data, name="repro-a", storage_path=tmp_path, workers=2)
    second = train(settings(), data, name="repro-b", storage_path=tmp_path, workers=2)
    assert [r["epoch"] for r in first.history] == [1, 2]
    assert first.best_weights.keys() == second.best_weights.keys()
    assert not any(k.startswith("module.") for k in first.best_weights)
    assert all(torch.equal(first.best_weights[k], second.best_weights[k]) for k in first.best_weights)
    other = train(settings(seed=4, epochs=1), data, name="repro-c", storage_path=tmp_path, workers=2)
    assert not all(torch.equal(first.best_weights[k], other.best_weights[k]) for k in other.best_weights)


def test_the_train_controller_never_imports_torch(ray_address, tmp_path):
    """Ray Train's controller unpickles our backend config, callbacks and loop config before it starts any
    worker; a torch import there sat on the critical path of every start-up (2–7 s on the GPU hosts)."""
    from ray.train import UserCallback

    seen = tmp_path / "controller_modules.txt"

    class ControllerModules(UserCallback):  # defined here, so it travels by value: imports nothing of ours
        def after_report(self, run_context, metrics, checkpoint):
            import sys

            seen.write_text(" ".join(sorted({name.split(".")[0] for name in sys.modules})))

    train(settings(epochs=1), digits(200), name="lean-controller", storage_path=tmp_path, workers=2,
          callbacks=[ControllerModules()])
    modules = seen.read_text().split()
    assert "deepseek_ray" in modules and "torch" not in modules


def test_a_failed_worker_group_resumes_from_the_last_checkpoint(ray_address, tmp_path):
    lines: list[str] = []
    result = train(settings(epochs=3, fail_at_epoch=1), digits(), name="drill", storage_path=tmp_path, workers=2,
                   max_failures=1, progress=lines.append)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]  # each epoch reported exactly once
    assert result.epochs_run == 3 and len(lines) == 3


def test_an_out_of_memory_on_one_rank_backs_off_every_rank(ray_address, tmp_path):
    plain = {"model_spec": {"type": "plain_cnn", "in_channels": 1, "num_classes": 10, "image_size": 8},
             "augment": [], "epochs": 1, "batch_size": 16}
    data = digits(400)
    reference = train(settings(**plain), data, name="oom-reference", storage_path=tmp_path, workers=2)
    drilled = train(settings(**plain, inject_oom={"rank": 1, "step": 2}), data, name="oom-drill", storage_path=tmp_path,
                    workers=2)
    folder = next(p for p in (tmp_path / "oom-drill").glob("checkpoint_*") if p.is_dir())  # not Ray's checkpoint_manager_snapshot.json
    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    assert (state["trainer"]["batch_size"], state["trainer"]["accumulation"]) == (8, 2)  # both ranks backed off
    for key, value in reference.best_weights.items():
        assert torch.allclose(value, drilled.best_weights[key], atol=1e-5), key
    # Inside the syncing backward (all-reduces in flight) no redo is possible: the worker ends, leaves the
    # micro-batch to restart with, and the restarted run still ends with the weights of a run without OOM.
    restarted = train(settings(**plain, inject_oom={"rank": 1, "step": 2, "where": "backward"}), data,
                      name="oom-backward", storage_path=tmp_path, workers=2, max_failures=1)
    assert json.loads((tmp_path / "oom-backward" / "oom_micro_batch.json").read_text()) == {"micro_batch": 8}
    for key, value in reference.best_weights.items():
        assert torch.allclose(value, restarted.best_weights[key], atol=1e-5), key


def test_an_out_of_memory_under_ddp_with_batchnorm_buffers(ray_address, tmp_path):
    """DDP broadcasts BatchNorm statistics at the start of a window: the failed forward already did, so the
    redone window must not (a second broadcast met the other rank's all-reduce, and the run hung)."""
    spec = {"augment": [], "epochs": 1, "batch_size": 16}  # the cell net: conv → BatchNorm
    data = digits(400)
    reference = train(settings(**spec), data, name="bn-reference", storage_path=tmp_path, workers=2)
    drilled = train(settings(**spec, inject_oom={"rank": 1, "step": 2}), data, name="bn-drill", storage_path=tmp_path,
                    workers=2, max_failures=0)
    folder = next(p for p in (tmp_path / "bn-drill").glob("checkpoint_*") if p.is_dir())
    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    assert (state["trainer"]["batch_size"], state["trainer"]["accumulation"]) == (8, 2)
    # Micro-batches of 8 normalise with their own batch statistics, so the weights differ a little, not more.
    for key, value in reference.best_weights.items():
        if value.is_floating_point() and "running" not in key:
            assert torch.allclose(value, drilled.best_weights[key], atol=0.05), key
