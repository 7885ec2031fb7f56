"""Replay held-out examples to a live app in a shadow session, then their labels, until the decision.

The held-out examples are the experiment file's test split, exactly as the pipeline split them (no model saw
them in training): raw texts for a text dataset, raw pixel values or rows for the others. Each round sends
``--batch`` examples (``--concurrency`` at a time), then POSTs their labels to
``{url}/feedback`` by the ``x-request-id`` of each answer (only the mirrored share is in the shadow log; the
others come back as ``not_mirrored``), then prints how the session stands. It stops at ``promote`` or ``keep``
(the decision is valid at every look), or when the split is used up.

    python examples/replay_shadow.py --config examples/shadow.yaml
    python examples/replay_shadow.py --config examples/text_fewshot.yaml --limit 2000 --address 127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import time
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


def send(session: requests.Session, url: str, example: Any) -> str | None:
    """One example; the answer's request id (None when it was not answered)."""
    reply = session.post(url, json={"inputs": example}, timeout=30)
    return reply.headers.get("x-request-id") if reply.status_code == 200 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("examples/shadow.yaml"))
    parser.add_argument("--url", default=None, help="the live route (default: serve.host/port/route of --config)")
    parser.add_argument("--address", default="auto", help="the Ray cluster serving the app (for the status)")
    parser.add_argument("--batch", type=int, default=100, help="examples per round, then their labels")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="at most this many held-out examples")
    opts = parser.parse_args()

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
    started, status = time.time(), None
    with requests.Session() as http, ThreadPoolExecutor(opts.concurrency) as pool:
        for start in range(0, len(examples), opts.batch):
            chunk = slice(start, start + opts.batch)
            ids = list(pool.map(lambda example: send(http, url, example), examples[chunk]))
            pairs = [{"request_id": i, "label": y} for i, y in zip(ids, labels[chunk], strict=True) if i]
            time.sleep(0.2)  # the last mirrored answers reach the log
            http.post(f"{url}/feedback", json={"labels": pairs}, timeout=60)
            time.sleep(0.2)
            status = shadow_status(cfg.name)
            decision = status["decision"]
            print(
                f"  {start + len(ids):>6} sent, {status['labelled']:>5} labelled pairs: Δ {decision['delta']} in "
                f"[{decision['lower']}, {decision['upper']}] → {decision['verdict']}  ({time.time() - started:.0f} s)",
                flush=True,
            )
            if decision["verdict"] != "need_more_data":
                break
    if status is not None:
        print("\n" + render_status(status))


if __name__ == "__main__":
    main()
