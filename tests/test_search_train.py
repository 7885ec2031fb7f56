"""Search and training on the session's Ray cluster, in-process."""

from __future__ import annotations

import json

import torch

from deepseek_ray.config import SearchConfig, TrainConfig
from deepseek_ray.data import load_dataset
from deepseek_ray.hpo import HPOConfig, run_search
from deepseek_ray.nas import NASConfig
from deepseek_ray.optim.drills import FailOnce, InjectOOM
from deepseek_ray.train import train


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


CELLNET = {"type": "cellnet", "arch": "c8|conv3x3", "in_channels": 1, "num_classes": 10}
PLAIN_CNN = {"type": "plain_cnn", "in_channels": 1, "num_classes": 10, "image_size": 8}


SHIFT = ({"type": "random_shift", "pixels": 1},)


def run(data, name: str, tmp_path, *, model_spec=CELLNET, seed: int = 3, augment=SHIFT, callbacks=(), ray_callbacks=(),
        progress=None, **config):
    """``train()`` on two workers with the test recipe; ``config`` overrides TrainConfig fields."""
    recipe = TrainConfig(**{"epochs": 2, "workers": 2, "optimizer": {"lr": 5e-3}, "per_device_train_batch_size": 32,
                            "early_stopping_patience": None, **config})
    return train(recipe, data, model_spec=model_spec, name=name, storage_path=tmp_path, seed=seed,
                 augment=list(augment), callbacks=callbacks, ray_callbacks=ray_callbacks, progress=progress)


def test_same_seed_same_weights_on_two_workers(ray_address, tmp_path):
    data = digits()
    first = run(data, "repro-a", tmp_path)
    second = run(data, "repro-b", tmp_path)
    assert [r["epoch"] for r in first.history] == [1, 2]
    assert first.best_weights.keys() == second.best_weights.keys()
    assert not any(k.startswith("module.") for k in first.best_weights)
    assert all(torch.equal(first.best_weights[k], second.best_weights[k]) for k in first.best_weights)
    other = run(data, "repro-c", tmp_path, seed=4, epochs=1)
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

    run(digits(200), "lean-controller", tmp_path, epochs=1, ray_callbacks=[ControllerModules()])
    modules = seen.read_text().split()
    assert "deepseek_ray" in modules and "torch" not in modules


def test_a_failed_worker_group_resumes_from_the_last_checkpoint(ray_address, tmp_path):
    lines: list[str] = []
    result = run(digits(), "drill", tmp_path, epochs=3, max_failures=1, progress=lines.append,
                 callbacks=[FailOnce(after_epoch=1)])
    assert [r["epoch"] for r in result.history] == [1, 2, 3]  # each epoch reported exactly once
    assert result.epochs_run == 3 and len(lines) == 3


def test_an_out_of_memory_on_one_rank_backs_off_every_rank(ray_address, tmp_path):
    plain = {"model_spec": PLAIN_CNN, "augment": [], "epochs": 1, "per_device_train_batch_size": 16}
    data = digits(400)
    reference = run(data, "oom-reference", tmp_path, **plain)
    drilled = run(data, "oom-drill", tmp_path, **plain, callbacks=[InjectOOM(rank=1, step=2)])
    # is_dir: not Ray's checkpoint_manager_snapshot.json
    folder = next(p for p in (tmp_path / "oom-drill").glob("checkpoint_*") if p.is_dir())
    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    assert (state["trainer"]["batch_size"], state["trainer"]["accumulation"]) == (8, 2)  # both ranks backed off
    for key, value in reference.best_weights.items():
        assert torch.allclose(value, drilled.best_weights[key], atol=1e-5), key
    # Inside the syncing backward (all-reduces in flight) no redo is possible: the worker ends, leaves the
    # micro-batch to restart with, and the restarted run still ends with the weights of a run without OOM.
    restarted = run(data, "oom-backward", tmp_path, **plain, max_failures=1,
                    callbacks=[InjectOOM(rank=1, step=2, where="backward")])
    assert json.loads((tmp_path / "oom-backward" / "oom_micro_batch.json").read_text()) == {"micro_batch": 8}
    for key, value in reference.best_weights.items():
        assert torch.allclose(value, restarted.best_weights[key], atol=1e-5), key


def test_an_out_of_memory_under_ddp_with_batchnorm_buffers(ray_address, tmp_path):
    """DDP broadcasts BatchNorm statistics at the start of a window: the failed forward already did, so the
    redone window must not (a second broadcast met the other rank's all-reduce, and the run hung)."""
    spec = {"augment": [], "epochs": 1, "per_device_train_batch_size": 16}  # the cell net: conv → BatchNorm
    data = digits(400)
    reference = run(data, "bn-reference", tmp_path, **spec)
    drilled = run(data, "bn-drill", tmp_path, **spec, max_failures=0, callbacks=[InjectOOM(rank=1, step=2)])
    folder = next(p for p in (tmp_path / "bn-drill").glob("checkpoint_*") if p.is_dir())
    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    assert (state["trainer"]["batch_size"], state["trainer"]["accumulation"]) == (8, 2)
    # Micro-batches of 8 normalise with their own batch statistics, so the weights differ a little, not more.
    for key, value in reference.best_weights.items():
        if value.is_floating_point() and "running" not in key:
            assert torch.allclose(value, drilled.best_weights[key], atol=0.05), key
