"""One Ray cluster for the whole suite: a local head that ``ray.init`` starts in the test process, shared by
in-process tests and by the CLI in subprocesses (``--address`` its GCS address). The ``ray job submit`` test
starts its own ``ray start --head`` cluster, as the README tells users (tests/test_jobs.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

# Ray Train's first step comes 11–14 s after the call on this 2-core machine (BENCHMARKS.md, "Ray Train start-up"),
# and several times that when the cores are busy with the suite's other processes: Ray's 30 s default fails such runs.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "240")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray_bin() -> str:
    return shutil.which("ray") or str(Path(sys.executable).parent / "ray")


@dataclass
class Cluster:
    """The session's Ray head: its GCS address (for ``--address``), dashboard URL (for jobs), Serve port."""

    address: str
    dashboard: str
    serve_port: int


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """A head node owned by this test process (4 logical CPUs: 2 trials or 2 workers, plus Serve).

    ``address="local"``: a new head even when a ``ray start`` cluster runs on this machine (``ray.init()``
    would join that one). It ends with the process, no ``ray stop`` needed, so suites side by side do not meet.
    """
    import ray

    from deepseek_ray.runtime import serve_settings

    os.environ.update(serve_settings("haproxy"))  # Serve as a cluster runs it (cluster.yaml): its fast path
    os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"  # a deleted app's replicas go at once
    dashboard_port = free_port()
    ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_port=dashboard_port, namespace="tests",
             log_to_driver=False, logging_level="ERROR")
    try:
        yield Cluster(ray.get_runtime_context().gcs_address, f"http://127.0.0.1:{dashboard_port}", free_port())
    finally:
        try:
            from ray import serve

            serve.shutdown()
        finally:
            ray.shutdown()


@pytest.fixture(scope="session")
def ray_address(cluster: Cluster) -> str:
    return cluster.address


@pytest.fixture(scope="session")
def image_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model bundle of a small untrained cell network for 1×8×8 images (for export tests)."""
    import torch

    from deepseek_ray.models import build_model, save_bundle

    folder = tmp_path_factory.mktemp("bundle")
    spec = {"type": "cellnet", "arch": "c8|conv5x5|identity", "in_channels": 1, "num_classes": 10}
    torch.manual_seed(0)
    save_bundle(folder, build_model(spec).state_dict(), spec, labels=[str(i) for i in range(10)], input_shape=(1, 8, 8),
                preprocessing={"type": "normalize", "mean": 40.0, "std": 30.0}, seed=0)
    return folder


@pytest.fixture(scope="session")
def tiny_config_path() -> Path:
    return DATA / "tiny.yaml"


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch working directory for runs (artifacts, mlflow.db)."""
    return tmp_path_factory.mktemp("work")


def cli_env() -> dict[str, str]:
    """The environment a ``python -m deepseek_ray`` subprocess runs in: this checkout first, the cluster from
    ``--address`` only."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m deepseek_ray ARGS`` and return the finished process."""
    return subprocess.run([sys.executable, "-m", "deepseek_ray", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=cli_env())


@pytest.fixture(scope="session")
def e2e_run(cluster: Cluster, tiny_config_path: Path, workdir: Path) -> dict:
    """`deepseek-ray run` on the tiny config against the session cluster; the endpoint stays up."""
    start = time.perf_counter()
    proc = run_cli(["run", str(tiny_config_path), "--address", cluster.address, "--set", f"serve.port={cluster.serve_port}"],
                   cwd=workdir)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return {"proc": proc, "wall": time.perf_counter() - start, "run_dir": workdir / "runs" / "tiny",
            "url": f"http://127.0.0.1:{cluster.serve_port}/tiny", "mlflow_db": workdir / "mlflow.db"}


class TinyBert(nn.Module):
    """A MiniLM-shaped text classifier with random weights (2 layers, 4 heads): token ids in, probabilities out,
    mean-pooled over the non-padding tokens (id 0 is padding)."""

    def __init__(self, vocab_size: int = 300, hidden_size: int = 32, classes: int = 2):
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=2 * hidden_size)
        self.encoder, self.head = BertModel(config, add_pooling_layer=False), nn.Linear(hidden_size, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).long()
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        keep = mask.unsqueeze(-1).float()
        return torch.softmax(self.head((hidden * keep).sum(1) / keep.sum(1).clamp(min=1)), -1)
