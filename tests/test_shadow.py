"""Shadow traffic on the session's Ray, over real HTTP: mirroring that never touches the live answer, the
prediction log and /feedback, the decision, promotion under load with no failed request, rollback, and the log
after a replica is killed. Two digits models: one trained (≈ 90 % accurate) and one untrained (≈ 10 %)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from torch import nn


def _digits_model(folder: Path, steps: int) -> Path:
    """A cell network on the digits, trained ``steps`` steps (0: its random weights), exported to ONNX."""
    from deepseek_ray.data import load_dataset
    from deepseek_ray.export import ModelExporter
    from deepseek_ray.models import build_model, save_bundle

    data = load_dataset("digits", seed=0)
    spec = {"type": "cellnet", "arch": "c8|conv3x3|identity", "in_channels": 1, "num_classes": 10}
    torch.manual_seed(0)
    model = build_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        batch = slice((step * 64) % 1400, (step * 64) % 1400 + 64)
        loss = nn.functional.cross_entropy(model(data.train.x[batch]), data.train.y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    bundle = save_bundle(folder / "bundle", model.state_dict(), spec, labels=data.labels, input_shape=data.input_shape,
                         preprocessing=data.preprocessing, seed=0, kind=data.kind)
    ModelExporter(format="onnx").export(bundle, folder / "model.onnx")
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from deepseek_ray.data import load_dataset

    data = load_dataset("digits", seed=0)
    return data.raw("test").numpy(), data.targets("test")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shadow")
    return {"good": _digits_model(folder / "good", 150), "bad": _digits_model(folder / "bad", 0)}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="module")
def live(cluster, models, store, tmp_path_factory):
    """The app ``dig`` serving the untrained model from the registry (version 1, ``champion``)."""
    from ray import serve

    from deepseek_ray.deploy import deploy
    from deepseek_ray.tracking.registry import register_model

    assert register_model(models["bad"], "dig", store, alias="champion") == "1"
    url = deploy("models:/dig@champion", name="dig", route="/dig", port=cluster.serve_port, tracking_uri=store,
                 autoscaling={"min_replicas": 1, "max_replicas": 1}, num_cpus=0.25,
                 batching={"max_batch": 32, "latency_threshold_ms": 5000})
    deadline = time.time() + 60
    while requests.get(url, timeout=30).status_code != 200:
        assert time.time() < deadline
        time.sleep(0.5)
    yield {"url": url, "log_root": tmp_path_factory.mktemp("shadow_logs")}
    from deepseek_ray.deploy import stop_shadow

    stop_shadow("dig")
    serve.delete("dig")


def _predict(url: str, image: np.ndarray, request_id: str | None = None) -> requests.Response:
    headers = {"x-request-id": request_id} if request_id else {}
    return requests.post(url, json={"inputs": image.tolist()}, headers=headers, timeout=30)


def _replay(url: str, images: np.ndarray, labels: np.ndarray, prefix: str) -> list[str]:
    """Send each image, then label every answered request by its id; returns the ids."""
    ids = []
    for i, image in enumerate(images):
        reply = _predict(url, image, f"{prefix}-{i}")
        assert reply.status_code == 200, reply.text
        ids.append(reply.headers["x-request-id"])
    time.sleep(0.3)  # past the log's durability bound
    pairs = [{"request_id": i, "label": int(y)} for i, y in zip(ids, labels, strict=True)]
    feedback = requests.post(f"{url}/feedback", json={"labels": pairs}, timeout=30)
    assert feedback.status_code == 200, feedback.text
    time.sleep(0.3)  # the labels are on disk within the log's durability bound
    return ids


def _right(url: str, images: np.ndarray, labels: np.ndarray) -> int:
    """How many of ``images`` the live model labels right."""
    return sum(_predict(url, image).json()["label"] == str(y) for image, y in zip(images, labels, strict=True))


def _first_request_mirrored(url: str, session: dict) -> None:
    """The first request after ``start_shadow`` returned is mirrored: every live replica follows the session by
    then (it reads the settings only each second, so without the wait for followers this fails)."""
    from deepseek_ray.deploy.prediction_log import DURABLE_WITHIN_MS, request_ids

    assert session["following"] == 1, session
    probe = f"probe-{time.time_ns()}"
    assert _predict(url, np.zeros((1, 8, 8)), probe).status_code == 200
    time.sleep(3 * DURABLE_WITHIN_MS / 1000)
    assert probe in request_ids(session["log_dir"]), "the first request of the session was not mirrored"


class SteadyLoad:
    """Requests one after another from two threads until stopped; every status that is not 200 is kept."""

    def __init__(self, url: str, image: np.ndarray):
        self.url, self.image, self.failures, self.sent = url, image, [], 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True) for _ in range(2)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _send(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    reply = session.post(self.url, json={"inputs": self.image.tolist()}, timeout=30)
                    if reply.status_code != 200:
                        self.failures.append((reply.status_code, reply.text[:200]))
                except requests.RequestException as err:
                    self.failures.append(("error", str(err)[:200]))
                self.sent += 1


def test_feedback_refuses_what_it_cannot_record(live, models, store):
    """Labels without a session, for an id never served, without a label or out of range: a 4xx with the reason,
    and the replica carries on."""
    from deepseek_ray.deploy import start_shadow

    url = live["url"]
    none = requests.post(f"{url}/feedback", json={"request_id": "x", "label": 3}, timeout=30)
    assert none.status_code == 404 and "no shadow session" in none.json()["error"]
    session = start_shadow("dig", models["good"], fraction=1.0, tracking_uri=store, log_dir=live["log_root"])
    _first_request_mirrored(url, session)
    unknown = requests.post(f"{url}/feedback", json={"request_id": "never-sent", "label": 3}, timeout=30)
    assert unknown.status_code == 404 and "never-sent" in unknown.json()["error"]
    bad = requests.post(f"{url}/feedback", json={"labels": [{"request_id": "x"}]}, timeout=30)
    assert bad.status_code == 400 and "label" in bad.json()["error"]
    reply = _predict(url, np.zeros((1, 8, 8)), "label-check")
    assert reply.status_code == 200 and reply.headers["x-request-id"] == "label-check"
    wrong = requests.post(f"{url}/feedback", json={"request_id": "label-check", "label": 11}, timeout=30)
    assert wrong.status_code == 400 and "0..9" in wrong.json()["error"]
    by_name = requests.post(f"{url}/feedback", json={"request_id": "label-check", "label": "7"}, timeout=30)
    assert by_name.status_code == 200 and by_name.json() == {"recorded": 1, "not_mirrored": []}
    both = requests.post(f"{url}/feedback", timeout=30, json={"labels": [{"request_id": "label-check", "label": 7},
                                                                          {"request_id": "never-sent", "label": 1}]})
    assert both.status_code == 200 and both.json() == {"recorded": 1, "not_mirrored": ["never-sent"]}
    assert requests.get(url, timeout=30).status_code == 200


def test_mirroring_never_touches_the_live_answer(live, models, store, digits):
    """A candidate that sleeps 0.5 s, then one that fails every request: the live answers are all right and
    no slower; the lag is dropped and counted, the failures counted."""
    from ray import serve

    from deepseek_ray.deploy import shadow_status, start_shadow
    from deepseek_ray.export import onnx_predict, onnx_session

    url = live["url"]
    images, _ = digits
    expected = onnx_predict(onnx_session(models["bad"]), images[:40].astype(np.float32)).argmax(1)

    def in_replica_ms(prefix: str) -> list[float]:
        timings = []
        for i, image in enumerate(images[:40]):
            reply = _predict(url, image, f"{prefix}-{i}")
            assert reply.status_code == 200 and reply.json()["label"] == str(expected[i]), reply.text
            timings.append(float(reply.headers["server-timing"].split("dur=")[1]))
        return timings

    baseline = in_replica_ms("plain")
    session = start_shadow("dig", models["good"], fraction=1.0, max_in_flight=4, timeout_s=2.0, tracking_uri=store,
                           log_dir=live["log_root"])
    _first_request_mirrored(url, session)
    candidate = serve.get_app_handle("dig-shadow")
    candidate.slow_down_for_drill.remote(per_batch_ms=500).result()
    slow = in_replica_ms("slow")
    candidate.slow_down_for_drill.remote(fail=True).result()
    time.sleep(1.5)  # the slow candidate's last calls end
    failing = in_replica_ms("failing")
    assert np.median(slow) <= np.median(baseline) + 5, (np.median(slow), np.median(baseline))
    assert np.median(failing) <= np.median(baseline) + 5, (np.median(failing), np.median(baseline))
    time.sleep(0.5)
    status = shadow_status("dig")
    assert status["dropped"] > 0, status  # 40 requests against 4 in flight of a 0.5 s candidate
    assert status["candidate_errors"] > 0, status
    assert status["answered"] + status["candidate_errors"] <= status["mirrored"], status
    candidate.slow_down_for_drill.remote().result()


def _on_metrics_endpoint(wanted: dict[str, float], timeout: float = 90) -> None:
    """Until each ``ray_deepseek_ray_shadow_*`` gauge of app ``dig`` shows at least its wanted value."""
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    deadline, seen = time.time() + timeout, {}
    while time.time() < deadline:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        seen = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("ray_deepseek_ray_shadow_") and 'app="dig"' in line}
        if all(seen.get(name, -np.inf) >= value for name, value in wanted.items()):
            return
        time.sleep(2)
    pytest.fail(f"the shadow gauges after {timeout:g} s: {seen}, wanted at least {wanted}")


def test_decision_promotion_under_load_and_rollback(cluster, live, models, store, digits):
    """need_more_data on a few labels and promote for the better candidate (the CLI's status and Ray's metrics
    say so); promoted by the CLI under steady load with no failed request, ``champion`` moved; keep for a worse
    candidate; a rollback to version 1; then auto_promote promotes the better one again by itself."""
    from deepseek_ray.deploy import promote, shadow_status, start_shadow
    from deepseek_ray.tracking.registry import alias_version
    from tests.conftest import run_cli

    url = live["url"]
    images, labels = digits
    session = start_shadow("dig", models["good"], fraction=1.0, tracking_uri=store, log_dir=live["log_root"])
    _first_request_mirrored(url, session)
    _replay(url, images[:4], labels[:4], "few")
    few = shadow_status("dig")
    assert few["decision"]["verdict"] == "need_more_data" and few["labelled"] == 4, few
    _replay(url, images[4:], labels[4:], "all")
    status = shadow_status("dig")
    assert status["decision"]["verdict"] == "promote", status
    assert status["decision"]["candidate_metric"] > status["decision"]["live_metric"] + 0.5
    shown = run_cli(["shadow", "status", "dig", "--address", cluster.address], cwd=Path.cwd(), timeout=120)
    assert shown.returncode == 0 and "promote (on 179 labelled pairs" in shown.stdout, shown.stdout + shown.stderr
    _on_metrics_endpoint({"ray_deepseek_ray_shadow_labelled": 179, "ray_deepseek_ray_shadow_promote": 1})

    with SteadyLoad(url, images[0]) as load:
        promoted = run_cli(["promote", "dig", "--address", cluster.address], cwd=Path.cwd(), timeout=300)
        time.sleep(1.0)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert load.failures == [] and load.sent > 20, (load.failures[:5], load.sent)
    assert alias_version("dig", "champion", store) == session["version"] != "1"
    assert alias_version("dig", "challenger", store) is None
    assert _right(url, images[:50], labels[:50]) >= 40  # the trained model answers now

    session = start_shadow("dig", models["bad"], fraction=1.0, tracking_uri=store, log_dir=live["log_root"])
    _first_request_mirrored(url, session)
    _replay(url, images, labels, "worse")
    assert shadow_status("dig")["decision"]["verdict"] == "keep"

    with SteadyLoad(url, images[0]) as load:
        promote("dig", to_version="1", tracking_uri=store)
        time.sleep(1.0)
    assert load.failures == [], load.failures[:5]
    assert alias_version("dig", "champion", store) == "1"
    assert _right(url, images[:50], labels[:50]) < 20  # the untrained model is back

    session = start_shadow("dig", models["good"], fraction=1.0, auto_promote=True, tracking_uri=store,
                           log_dir=live["log_root"])
    _first_request_mirrored(url, session)
    with SteadyLoad(url, images[0]) as load:
        _replay(url, images, labels, "auto")
        deadline = time.time() + 120
        while alias_version("dig", "champion", store) != session["version"]:
            assert time.time() < deadline, "auto_promote did not promote within 120 s"
            time.sleep(1)
        time.sleep(1.0)
    assert load.failures == [], load.failures[:5]
    assert _right(url, images[:50], labels[:50]) >= 40


def test_prediction_log_survives_a_killed_replica(live, models, store, digits):
    """Every mirrored answer sent longer than the durability bound before the replica was killed is in the log."""
    import ray
    from ray.util.state import list_actors

    from deepseek_ray.deploy import start_shadow, stop_shadow
    from deepseek_ray.deploy.prediction_log import DURABLE_WITHIN_MS, request_ids

    url = live["url"]
    images, _ = digits
    session = start_shadow("dig", models["good"], fraction=1.0, tracking_uri=store, log_dir=live["log_root"])
    _first_request_mirrored(url, session)
    answered = []
    for i, image in enumerate(images[:150]):
        reply = _predict(url, image, f"kill-{i}")
        assert reply.status_code == 200
        answered.append((time.time(), reply.headers["x-request-id"]))
    killed_at = time.time()
    replicas = [a for a in list_actors(filters=[("state", "=", "ALIVE")]) if "ServeReplica:dig:" in a.class_name]
    assert len(replicas) == 1, replicas
    ray.kill(ray.get_actor(replicas[0].name, namespace="serve"), no_restart=False)
    logged = request_ids(session["log_dir"])
    due = [request_id for sent, request_id in answered if sent < killed_at - DURABLE_WITHIN_MS / 1000]
    assert due and set(due) <= logged, sorted(set(due) - logged)[:5]
    stop_shadow("dig")
    deadline = time.time() + 90
    while time.time() < deadline:  # Serve replaces the replica
        try:
            if _predict(url, images[0]).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise AssertionError("the killed replica was not replaced")
