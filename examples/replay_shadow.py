"""Replay held-out examples to a live app in a shadow session, then their labels, until the decision.

The held-out examples are the experiment file's test split, exactly as the pipeline split them (no model saw
them in training): raw texts for a text dataset, raw pixel values or rows for the others. Each round sends
``--batch`` examples (``--concurrency`` at a time), then POSTs their labels to
``{url}/feedback`` by the ``x-request-id`` of each answer (only the mirrored share is in the shadow log; the
others come back as ``not_mirrored``), then prints how the session stands. It stops at ``promote`` or ``keep``
(the decision is valid at every look), or when the split is used up.

With ``--offline CANDIDATE LIVE`` it sends nothing: both models score the whole split at once (the
offline comparison, :meth:`deepseek_ray.eval.ShadowModeEvaluator.evaluate`).

    python examples/replay_shadow.py --config examples/shadow.yaml
    python examples/replay_shadow.py --config examples/shadow_text.yaml --address 127.0.0.1:6379
    python examples/replay_shadow.py --config examples/shadow_text.yaml \
        --offline models:/reviews-shadowed@challenger models:/reviews-shadowed@champion
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests


def held_out(config: Path) -> tuple[list[Any], list[str]]:
    """The test split's examples (as a client sends them) and label names of the experiment file's dataset."""
    from deepseek_ray.config import load
    from deepseek_ray.data import TextPreprocessor, from_config, raw_table, sample_rows

    cfg = load(config)
    data = cfg.data
    kind, table = raw_table(data.dataset, label=data.label, kind=data.kind)
    if (data.kind or kind) != "text":
        splits = from_config(data, cfg.seed)
        return splits.raw("test").numpy().tolist(), [splits.labels[int(y)] for y in splits.targets("test")]
    text_column = "text" if "text" in table.frame.columns else next(c for c in table.frame.columns if c != table.label)
    splitter = TextPreprocessor(
        split=(data.split.train, data.split.val, data.split.test),
        seed=cfg.seed,
        text_column=text_column,
        label_column=table.label,
    )
    rows, (_, _, test) = splitter.split_rows(sample_rows(table.frame, data.limit, cfg.seed))
    return rows[text_column].astype(str).iloc[test].tolist(), rows[table.label].astype(str).iloc[test].tolist()


def send(session: requests.Session, url: str, example: Any) -> tuple[int, str | None]:
    """One example; the answer's status and request id (None when it was not answered)."""
    reply = session.post(url, json={"inputs": example}, timeout=30)
    return reply.status_code, reply.headers.get("x-request-id") if reply.status_code == 200 else None


def compare_offline(config: Path, candidate: str, live: str, limit: int | None = None) -> None:
    """Both models on the held-out split at once: the metrics, Δ with its paired bootstrap interval, McNemar."""
    from deepseek_ray.config import load
    from deepseek_ray.eval import ShadowModeEvaluator

    cfg = load(config)
    examples, labels = held_out(config)
    examples, labels = examples[:limit], labels[:limit]
    shadow = cfg.serve.shadow
    evaluator = ShadowModeEvaluator(
        new_model=candidate,
        old_model=live,
        metric=shadow.metric,
        threshold=shadow.threshold,
        alpha=shadow.alpha,
        tracking_uri=cfg.tracking.tracking_uri,
    )
    started = time.time()
    report = evaluator.evaluate((examples, labels))
    print(f"{report.n} held-out examples of {cfg.data.dataset}, {time.time() - started:.0f} s")
    print(f"  live {live}: {report.metric} {report.live_metric:.4f}")
    print(f"  candidate {candidate}: {report.metric} {report.candidate_metric:.4f}")
    print(
        f"  Δ {report.delta:.4f}, paired bootstrap [{report.lower:.4f}, {report.upper:.4f}] → {report.verdict}; "
        f"agreement {report.agreement:.4f}; McNemar {report.mcnemar}"
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("examples/shadow.yaml"))
    parser.add_argument("--url", default=None, help="the live route (default: serve.host/port/route of --config)")
    parser.add_argument("--address", default="auto", help="the Ray cluster serving the app (for the status)")
    parser.add_argument("--batch", type=int, default=100, help="examples per round, then their labels")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="at most this many held-out examples")
    parser.add_argument(
        "--offline",
        nargs=2,
        metavar=("CANDIDATE", "LIVE"),
        help="no traffic: compare two models (files or models:/ URIs, e.g. models:/NAME@challenger "
        "models:/NAME@champion) once on the whole held-out split (ShadowModeEvaluator.evaluate)",
    )
    opts = parser.parse_args()
    if opts.offline:
        return compare_offline(opts.config, *opts.offline, limit=opts.limit)

    from deepseek_ray.cli import render_status
    from deepseek_ray.config import load
    from deepseek_ray.deploy import shadow_status
    from deepseek_ray.runtime import connect

    cfg = load(opts.config)
    url = opts.url or f"http://{cfg.serve.host}:{cfg.serve.port}{cfg.serve.route}"
    examples, labels = held_out(opts.config)
    examples, labels = examples[: opts.limit], labels[: opts.limit]
    print(f"{len(examples)} held-out examples of {cfg.data.dataset} to {url}", flush=True)
    connect(opts.address)  # the cluster serving the app, Ray's own log lines hidden
    started, status, refused = time.time(), None, Counter()
    with requests.Session() as http, ThreadPoolExecutor(opts.concurrency) as pool:
        for start in range(0, len(examples), opts.batch):
            chunk = slice(start, start + opts.batch)
            answers = list(pool.map(lambda example: send(http, url, example), examples[chunk]))
            refused.update(code for code, _ in answers if code != 200)
            ids = [request_id for _, request_id in answers]
            pairs = [{"request_id": i, "label": y} for i, y in zip(ids, labels[chunk], strict=True) if i]
            time.sleep(0.2)  # the last mirrored answers reach the log
            http.post(f"{url}/feedback", json={"labels": pairs}, timeout=60)
            time.sleep(0.2)
            status = shadow_status(cfg.name)
            decision = status["decision"]
            print(
                f"  {start + len(ids):>6} sent ({sum(refused.values())} refused), {status['labelled']:>5} labelled "
                f"pairs: Δ {_num(decision['delta'])} in [{_num(decision['lower'])}, {_num(decision['upper'])}] → "
                f"{decision['verdict']}  ({time.time() - started:.0f} s)",
                flush=True,
            )
            if decision["verdict"] != "need_more_data":
                break
    if status is not None:
        print("\n" + render_status(status))
    if refused:
        print(f"refused by the live app: {dict(refused)} (status: count)")


if __name__ == "__main__":
    main()
