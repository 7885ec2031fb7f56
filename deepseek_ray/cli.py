"""The command line: ``deepseek-ray run|search|train|export|serve|validate|schema|datasets``, and on a running
cluster ``deepseek-ray shadow start|status|stop NAME`` and ``deepseek-ray promote NAME [--to VERSION]``.

Every stage command reads the experiment file and the previous stage's artifact in the run folder.
Ray is embedded (started here, stopped on exit) unless ``--address`` or ``RAY_ADDRESS`` names a
cluster, as under ``ray job submit``. Ray's own log lines stay hidden unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, json_schema, load


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set train.epochs=2`` → ``{'train.epochs': 2}`` (values parsed as YAML)."""
    parsed = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError("--set", [f"{pair!r}: expected KEY=VALUE, e.g. train.epochs=2"])
        key, value = pair.split("=", 1)
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepseek-ray", description="AutoML on Ray: search, train, export, serve.")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, with_file: bool = True, with_ray: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if with_file:
            sub.add_argument("file", type=Path, help="experiment file (YAML)")
            sub.add_argument(
                "--set",
                dest="overrides",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override a key of the file, e.g. --set train.epochs=2 (repeatable)",
            )
        if with_ray:
            sub.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
            sub.add_argument("--verbose", action="store_true", help="show Ray's own logs and warnings")
        return sub

    run = add("run", "the whole pipeline: search → train → export → serve, tracked in MLflow")
    run.add_argument("--no-serve", action="store_true", help="stop after export (no endpoint)")
    search = add("search", "only the search (writes search/best.json)")
    for sub in (run, search):
        sub.add_argument("--resume", action="store_true", help="continue an interrupted search of the same name")
    add("train", "only the final training of the best configuration (writes the model bundle)")
    add("export", "only the ONNX export of the model bundle, with parity checks")
    add("serve", "only serving the exported model on Ray Serve")
    add("validate", "check an experiment file and list every error", with_ray=False)
    add("schema", "print the experiment file's JSON Schema", with_file=False, with_ray=False)
    add("datasets", "list the registered datasets", with_file=False, with_ray=False)
    _shadow_commands(add)
    return parser


def _shadow_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """``shadow start|status|stop NAME`` and ``promote NAME``: on the cluster where the app runs."""

    def on_app(sub: argparse.ArgumentParser, with_ray: bool = True) -> argparse.ArgumentParser:
        sub.add_argument("name", help="the live Serve app (the experiment's name)")
        if with_ray:
            sub.add_argument("--address", help="the Ray cluster serving the app (default: RAY_ADDRESS, else auto)")
            sub.add_argument("--verbose", action="store_true", help="show Ray's own logs and warnings")
        sub.add_argument("--tracking-uri", help="the MLflow store (default: the one the live app was deployed with)")
        return sub

    shadow = add("shadow", "a candidate in the shadow of a live app", with_file=False, with_ray=False)
    actions = shadow.add_subparsers(dest="action", required=True)
    start = on_app(actions.add_parser("start", help="mirror a share of the live traffic to a candidate"))
    start.add_argument("candidate", help="an exported .onnx file, a folder holding one, or a models:/ URI")
    start.add_argument("--fraction", type=float, default=0.1, help="share of requests mirrored (default 0.1)")
    start.add_argument("--metric", help="accuracy (default), f1_score, precision, recall, roc_auc, mae, rmse")
    start.add_argument("--threshold", type=float, default=0.0, help="promote only when better by more than this")
    start.add_argument("--auto-promote", action="store_true", help="promote as soon as the decision says so")
    on_app(actions.add_parser("status", help="mirrored, dropped and labelled counts, both metrics, the decision"))
    on_app(actions.add_parser("stop", help="end the shadow session; the live app is untouched"))
    promote = on_app(
        add("promote", "make the shadow candidate live (or --to VERSION: roll back)", with_file=False), with_ray=False
    )
    promote.add_argument("--to", dest="version", help="a registered version to serve instead (a rollback)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``deepseek-ray`` and ``python -m deepseek_ray``; returns the exit code: 0 done, 1 a bad
    experiment file or value, 2 a bad command line (argparse's usage errors, a malformed ``--set``), 130 Ctrl-C.

    >>> main(['validate', 'no/such/file.yaml'])
    1
    """
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if err.source == "--set" else 1
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "schema":
        print(json_schema())
        return 0
    if args.command in ("shadow", "promote"):
        return _on_live_app(args)
    if args.command == "datasets":
        from .data import available_datasets

        print("\n".join(available_datasets()))
        return 0
    cfg = load(args.file, _overrides(args.overrides))
    if args.command == "validate":
        print(
            f"{args.file}: valid ({cfg.name}: dataset {cfg.data.dataset}{_data_options(cfg)}, "
            f"strategy {cfg.search.strategy.type}, scheduler {cfg.search.scheduler.type}, "
            f"{cfg.search.budget.trials} trials, "
            f"{cfg.train.epochs} epochs)"
        )
        return 0
    return _with_ray(args, cfg)


def _on_live_app(args: argparse.Namespace) -> int:
    from .deploy import shadow
    from .runtime import connect

    connect(
        args.address or os.environ.get("RAY_ADDRESS") or "auto", verbose=args.verbose
    )  # the cluster serving the app, never a new Ray
    if args.command == "promote":
        result = shadow.promote(args.name, args.version, args.tracking_uri)
        previous = f" (was v{result['previous']})" if result["previous"] else ""
        print(f"{args.name} serves v{result['version']}{previous}; champion -> v{result['version']}")
    elif args.action == "start":
        session = shadow.start_shadow(
            args.name,
            args.candidate,
            fraction=args.fraction,
            metric=args.metric,
            threshold=args.threshold,
            auto_promote=args.auto_promote,
            tracking_uri=args.tracking_uri,
        )
        print(f"{session['app']}: v{session['version']} in the shadow of {args.name}, log in {session['log_dir']}")
    elif args.action == "status":
        print(render_status(shadow.shadow_status(args.name)))
    else:
        shadow.stop_shadow(args.name)
        print(f"shadow session of {args.name} stopped")
    return 0


def render_status(status: dict[str, Any]) -> str:
    """``shadow status``'s table: the counts, both metrics, the interval and the decision.

    >>> print(render_status({'name': 'm', 'version': '2', 'mirrored': 3, 'answered': 3, 'dropped': 0,
    ...     'candidate_errors': 0, 'labelled': 2, 'paired': 2, 'decision': {'metric': 'accuracy', 'n': 2,
    ...     'live_metric': 0.5, 'candidate_metric': 1.0, 'delta': 0.5, 'lower': -1.0, 'upper': 1.0,
    ...     'agreement': 0.5, 'verdict': 'need_more_data', 'threshold': 0.0, 'alpha': 0.05}}).splitlines()[-1])
    decision                 need_more_data (on 2 labelled pairs; alpha 0.05, valid at every look)
    """

    def number(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}"

    decision = status["decision"]
    rows = [
        ("candidate", f"v{status['version']} in the shadow of {status['name']}"),
        ("mirrored / answered", f"{status['mirrored']} / {status['answered']}"),
        ("dropped / candidate errors", f"{status['dropped']} / {status['candidate_errors']}"),
        ("labelled (paired)", f"{status['labelled']} ({status['paired']})"),
        ("agreement", number(decision.get("agreement"))),
        (f"live {decision['metric']}", number(decision.get("live_metric"))),
        (f"candidate {decision['metric']}", number(decision.get("candidate_metric"))),
        (
            "candidate - live",
            f"{number(decision.get('delta'))} in [{number(decision.get('lower'))}, {number(decision.get('upper'))}]"
            f" (threshold {decision['threshold']:g})",
        ),
        (
            "decision",
            f"{decision['verdict']} (on {decision['n']} labelled pairs; alpha {decision['alpha']:g}, "
            "valid at every look)",
        ),
    ]
    return "\n".join(f"{key:<24} {value}" for key, value in rows)


def _data_options(cfg: Any) -> str:
    """`` (window: lookback=52, horizon=1)``: the dataset kind's options as ``validate`` shows them."""
    key = cfg.data.options_key
    if key is None:
        return ""
    shown = {
        k: [a["type"] for a in v] if k == "augmentation" else v
        for k, v in getattr(cfg.data, key).model_dump(exclude_none=True).items()
    }
    return f" ({key}: " + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"


def _with_ray(args: argparse.Namespace, cfg: Any) -> int:
    from . import pipeline, stages
    from .data import from_config
    from .report import Reporter
    from .runtime import connect
    from .tracking import Tracker

    reporter = Reporter()
    reporter.line(f"experiment {cfg.name} from {args.file}; artifacts in {cfg.run_dir}")
    with reporter.stage("ray"):
        embedded = connect(args.address, verbose=args.verbose, namespace=cfg.name, serve_ingress=cfg.serve.ingress)
        reporter.line("embedded local Ray" if embedded else f"joined cluster {args.address or 'RAY_ADDRESS'}")
        if args.command in ("run", "train"):
            from .ray_compat import prestart_train_helpers

            prestart_train_helpers()  # up by the time training starts, instead of on its critical path
    serving = False
    if args.command == "run":
        summary = pipeline.run_pipeline(cfg, serve=not args.no_serve, reporter=reporter, resume=args.resume)
        print("\n" + summary.render(), flush=True)
        serving = not args.no_serve
    else:
        tracker = Tracker.from_config(cfg.tracking, cfg.name)
        stage: Callable[..., Any] = {
            "search": lambda: stages.search_stage(
                cfg, from_config(cfg.data, cfg.seed), reporter, tracker, resume=args.resume
            ),
            "train": lambda: stages.train_stage(cfg, from_config(cfg.data, cfg.seed), reporter, tracker),
            "export": lambda: stages.export_stage(cfg, from_config(cfg.data, cfg.seed), reporter, tracker),
            "serve": lambda: stages.serve_stage(cfg, reporter),
        }[args.command]
        with (
            tracker.run(f"{cfg.name}-{args.command}", tags={"deepseek_ray.stage": args.command}),
            reporter.stage(args.command),
        ):
            stage()
        serving = args.command == "serve"
    if serving:
        _keep_serving(embedded, cfg)
    return 0


def _keep_serving(embedded: bool, cfg: Any) -> None:
    """An embedded Ray ends with this process, so hold the endpoint open until Ctrl-C."""
    url = f"http://{cfg.serve.host}:{cfg.serve.port}{cfg.serve.route}"
    if not embedded:
        print(
            f"\nThe endpoint stays up on the cluster: {url}\n"
            f"Stop it with: serve delete {cfg.name}  (or `serve shutdown`)",
            flush=True,
        )
        return
    print(f"\nServing at {url} — press Ctrl-C to stop.", flush=True)
    # Ctrl-C, and SIGTERM from a process manager, both end serving cleanly (a shell's `&` ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        # The embedded Ray, Serve included, ends with this process; shutting Serve down first only adds
        # Ray's warnings about its controller's interrupted graceful shutdown.
        print("stopped serving", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
