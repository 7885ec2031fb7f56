#!/usr/bin/env bash
# The MNIST CI/CD loop of examples/shadow.yaml's header, end to end on a `ray start --head --num-cpus 4` cluster:
# a weak v1 goes live, v2 is served in its shadow, a replay decides, promote; then a weak v3 in v2's shadow, a
# replay decides, roll back to v1. Each step's wall time is printed before it. Run it under bench/record.py:
#   python bench/record.py bench/results/cpu_2026-12-02/shadow_loop.txt -- bash bench/bench_shadow_loop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d /tmp/shadowloop.XXXX)
weak=(--set train.epochs=1 --set search.budget.trials=1 --set train.optimizer.lr=0.00002)
step() { echo; echo "== $(date -u +%H:%M:%S) $*"; local t0=$SECONDS; "$@"; echo "== wall $((SECONDS - t0)) s"; }
ray stop --force >/dev/null 2>&1 || true
ray start --head --num-cpus 4 --disable-usage-stats >/dev/null
trap 'ray stop --force >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
step deepseek-ray run examples/shadow.yaml --address auto --set output_dir="$out/v1" "${weak[@]}"
step deepseek-ray run examples/shadow.yaml --address auto --set output_dir="$out/v2"
step python examples/replay_shadow.py --config examples/shadow.yaml
step deepseek-ray shadow status mnist-shadowed
step deepseek-ray promote mnist-shadowed
step deepseek-ray run examples/shadow.yaml --address auto --set output_dir="$out/v3" "${weak[@]}"
step python examples/replay_shadow.py --config examples/shadow.yaml
step deepseek-ray shadow status mnist-shadowed
step deepseek-ray promote mnist-shadowed --to 1
