"""Run a benchmark command and keep its raw output in ``bench/results/``, headed by what made it.

The header holds the command, the UTC start and end, the commit (``+changes`` when the tree differs from it),
the machine (CPU model, cores) and the load average at start and end; the command's stdout and stderr follow as
they came, and the last line is its exit code. The output also goes to the terminal as it comes.

    python bench/record.py bench/results/main_job_cpu_2026-12-02.txt -- \\
        deepseek-ray run examples/quickstart.yaml --no-serve
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "-uno") else "")


def _cpu() -> str:
    with open("/proc/cpuinfo") as info:
        model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def record(out: Path, command: list[str]) -> int:
    """Run ``command``, write its header and output to ``out``; return its exit code."""
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with out.open("w") as log:
        log.write(f"# command: {shlex.join(command)}\n# started: {_stamp()}, load average {_load()}\n")
        log.write(f"# commit: {_commit()}\n# machine: {_cpu()}\n\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = process.wait()
        log.write(f"\n# ended: {_stamp()}, load average {_load()}, wall {time.monotonic() - started:.1f} s\n")
        log.write(f"# exit code: {code}\n")
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the raw output's file, under bench/results/")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    opts = parser.parse_args()
    command = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    if not command:
        parser.error("no command given (after --)")
    sys.exit(record(opts.out, command))


if __name__ == "__main__":
    main()
