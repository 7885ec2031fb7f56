"""deepseek_ray.ray_compat: on Ray 2.60 every private Ray name it uses is there and the lean paths are taken;
with one made unavailable, the public fallback is taken and works."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
import textwrap

import pytest
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from deepseek_ray import ray_compat
from deepseek_ray.train.backend import TorchBackendConfig

ALL_INTERNALS = (
    *ray_compat.LEAN_TRAIN_INTERNALS,
    ray_compat.TRAINING_FRAMEWORK,
    ray_compat.AUTOSCALING_COORDINATOR,
    ray_compat.RAYLET_CONFIG,
    ray_compat.UPLOAD_PY_MODULES,
    ray_compat.UPLOAD_WORKING_DIR,
)


@pytest.fixture
def fresh_choice():
    """torch_trainer_class() chooses again (it caches its choice and warns once per process)."""
    ray_compat.torch_trainer_class.cache_clear()
    ray_compat._warned.clear()
    yield
    ray_compat.torch_trainer_class.cache_clear()


def make_unavailable(monkeypatch: pytest.MonkeyPatch, name: str, how: str) -> None:
    """As a Ray release that moved it: its module cannot be imported, or the module lacks the attribute."""
    module, _, path = name.partition(":")
    if how == "module":
        monkeypatch.setitem(sys.modules, module, None)  # import_module now raises ImportError
    else:
        owner_path, _, attribute = path.rpartition(".")
        owner = ray_compat.lookup(f"{module}:{owner_path}") if owner_path else importlib.import_module(module)
        if isinstance(owner, type):  # an inherited method: hide it where it is defined
            owner = next(klass for klass in owner.__mro__ if attribute in vars(klass))
        monkeypatch.delattr(owner, attribute)


def ours_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == ray_compat.__name__]


def callback_types(trainer) -> set[str]:
    return {type(callback).__name__ for callback in trainer._create_default_callbacks()}


def test_ray_2_60_has_every_internal_we_use_and_the_lean_path_is_taken(fresh_choice, caplog):
    assert ray.__version__ == "2.60.0"
    assert ray_compat.missing(ALL_INTERNALS) == []
    with caplog.at_level(logging.WARNING, logger=ray_compat.__name__):
        assert ray_compat.torch_trainer_class().__name__ == "LeanTorchTrainer"
    assert not ours_logged(caplog)
    assert ray_compat.torch_training_framework().name == "TORCH"
    assert TorchBackendConfig().framework is ray_compat.torch_training_framework()


def test_ray_train_still_reads_the_settings_we_change():
    from ray.train.v2._internal import constants

    names = {constants.HEALTH_CHECK_INTERVAL_S_ENV_VAR, constants.ENABLE_PREEMPTION_WATCHER_ENV_VAR}
    assert set(ray_compat.TRAIN_ENV) == names and names <= constants.ENV_VARS_TO_PROPAGATE


def test_the_lean_trainer_leaves_out_only_an_unused_datasets_callback(ray_address, fresh_choice):
    lean, scaling = ray_compat.torch_trainer_class(), ScalingConfig(num_workers=2)
    assert "DatasetsCallback" in callback_types(TorchTrainer(lambda: None, scaling_config=scaling))
    without = callback_types(lean(lambda: None, scaling_config=scaling, torch_config=TorchBackendConfig()))
    assert without == callback_types(TorchTrainer(lambda: None, scaling_config=scaling)) - {"DatasetsCallback"}
    with_data = lean(lambda: None, scaling_config=scaling, datasets={"train": ray.data.range(4)})
    assert "DatasetsCallback" in callback_types(with_data)


@pytest.mark.parametrize(
    "name, how",
    [
        (ray_compat.DATASETS_CALLBACK, "module"),
        (ray_compat.SETUP_PROCESS_GROUP, "attribute"),
        (ray_compat.DEFAULT_CALLBACKS_HOOK, "attribute"),
    ],
)
def test_a_moved_internal_gives_rays_plain_trainer_and_torch_config(monkeypatch, fresh_choice, caplog, name, how):
    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, logger=ray_compat.__name__):
        make_unavailable(patch, name, how)
        assert ray_compat.missing(ray_compat.LEAN_TRAIN_INTERNALS) == [name]
        trainer_class = ray_compat.torch_trainer_class()
        ray_compat.torch_trainer_class.cache_clear()
        ray_compat.torch_trainer_class()  # a second choice does not warn again
    warnings = ours_logged(caplog)
    assert len(warnings) == 1 and name in warnings[0] and "plain TorchTrainer" in warnings[0]
    assert trainer_class.__name__ == "PlainTorchTrainer" and issubclass(trainer_class, TorchTrainer)

    scaling = ScalingConfig(num_workers=2)
    ours = trainer_class(lambda: None, scaling_config=scaling, torch_config=TorchBackendConfig("gloo", timeout_s=60))
    assert type(ours.backend_config) is TorchConfig
    assert ours.backend_config.to_dict() == {"backend": "gloo", "init_method": "env", "timeout_s": 60}
    rays = TorchConfig(backend="gloo", init_method="tcp")
    assert trainer_class(lambda: None, scaling_config=scaling, torch_config=rays).backend_config is rays
    assert type(trainer_class(lambda: None, scaling_config=scaling).backend_config) is TorchConfig
    assert "DatasetsCallback" in callback_types(ours)  # Ray's defaults, untouched


def test_the_plain_fallback_trains(ray_address, monkeypatch, fresh_choice, tmp_path):
    with monkeypatch.context() as patch:  # chosen while the internal is gone; the run itself needs nothing of it
        make_unavailable(patch, ray_compat.SET_TORCH_ENV_VARS, "attribute")
        trainer_class = ray_compat.torch_trainer_class()
    assert trainer_class.__name__ == "PlainTorchTrainer"

    def write_process_group(config: dict) -> None:  # defined here, so it travels by value
        """On each worker: the group Ray set up (backend, size, an all-reduce), written by rank 0."""
        import torch
        import torch.distributed as dist

        total = torch.ones(1)
        dist.all_reduce(total)
        if dist.get_rank() == 0:
            with open(config["out"], "w") as handle:
                handle.write(f"{dist.get_backend()} {dist.get_world_size()} {int(total.item())}")
        ray.train.report({"done": 1})

    out = tmp_path / "group.txt"
    trainer_class(
        write_process_group,
        train_loop_config={"out": str(out)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        torch_config=TorchBackendConfig(backend="gloo"),
        run_config=RunConfig(name="plain-fallback", storage_path=str(tmp_path)),
    ).fit()
    assert out.read_text() == "gloo 2 2"


def test_a_lean_worker_function_whose_internal_moved_says_what_to_do(monkeypatch):
    make_unavailable(monkeypatch, ray_compat.SHUTDOWN_TORCH, "attribute")
    with pytest.raises(RuntimeError, match="_shutdown_torch.*torch_trainer_class"):
        ray_compat.shutdown_torch(destroy_process_group=False)


def test_the_framework_label_where_it_moved_is_none_as_for_any_backend_config(monkeypatch):
    make_unavailable(monkeypatch, ray_compat.TRAINING_FRAMEWORK, "module")
    assert ray_compat.torch_training_framework() is None and TorchBackendConfig().framework is None


def test_prestarting_the_autoscaling_coordinator_and_its_no_op(ray_address, monkeypatch):
    ray_compat.prestart_train_helpers()
    assert ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")
    make_unavailable(monkeypatch, ray_compat.AUTOSCALING_COORDINATOR, "module")
    assert ray_compat.lookup(ray_compat.AUTOSCALING_COORDINATOR) is None
    assert ray_compat.prestart_train_helpers() is None  # only an optimisation: nothing to do, no error


def test_reloading_rays_config_after_import():
    """In a fresh process (the suite's Ray keeps its config): a variable set after ``import ray`` is read."""
    script = textwrap.dedent("""
        import os
        import ray
        from ray._raylet import Config
        from deepseek_ray.ray_compat import reload_ray_config
        os.environ["RAY_health_check_period_ms"] = "1234"
        print(Config.health_check_period_ms(), reload_ray_config(), Config.health_check_period_ms())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["3000", "True", "1234"], proc.stderr


def test_reloading_rays_config_where_it_moved_warns_and_does_nothing(monkeypatch, caplog):
    monkeypatch.setattr(ray_compat, "RAYLET_CONFIG", "ray._raylet:MovedConfig.initialize")  # detection: missing
    monkeypatch.setattr(ray_compat, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=ray_compat.__name__):
        assert ray_compat.reload_ray_config() is False
    [warning] = ours_logged(caplog)
    assert "ray._raylet:MovedConfig.initialize" in warning and "RAY_AUTH_MODE" in warning


def test_local_modules_are_uploaded_as_uris_any_node_can_fetch(cluster):
    from conftest import ROOT

    [uri] = ray_compat.uploaded_py_modules([str(ROOT / "tests" / "toy_kind.py")])
    assert uri.startswith("gcs://_ray_pkg_")


def test_a_local_folder_is_uploaded_as_a_working_dir_uri(cluster, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    assert ray_compat.uploaded_working_dir(str(tmp_path)).startswith("gcs://_ray_pkg_")


def test_uploading_modules_where_it_moved_warns_and_leaves_them_to_the_nodes(monkeypatch, caplog):
    monkeypatch.setattr(ray_compat, "UPLOAD_PY_MODULES", "ray._private.runtime_env.py_modules:moved")
    monkeypatch.setattr(ray_compat, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=ray_compat.__name__):
        assert ray_compat.uploaded_py_modules(["my_kinds.py"]) is None
    [warning] = ours_logged(caplog)
    assert "my_kinds.py must be installed on every node" in warning
