#!/usr/bin/env bash
# One H200: MiniLM (64 tokens) served by Ray Serve from its torch.export program in fp16 (the image's ONNX Runtime
# has no CUDA provider), unbatched against adaptive batching and the FastAPI peer, after torch's offline batched
# throughput of the same program; open loop at fixed rates (closed loop past the knee measures refusals). On the
# GPU host, in the project's root (see BENCHMARKS.md, Serving):
#   source .gpu/unpack.sh; bash bench/bench_serve_gpu.sh OUT_DIR [PHASE ...]
# PHASE: check (the CUDA graph test; offline eager against CUDA graphs), one (1 replica), four (4 replicas, every
# server); all three by default. BENCH_ARGS adds to (and overrides) bench_serve.py's arguments in one and four.
set -euo pipefail
out=${1:-/tmp/serve_gpu}
shift || true
phases=${*:-check one four}
mkdir -p "$out"
python3 -m compileall -q -j 16 /tmp/site deepseek_ray bench >/dev/null 2>&1 || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import onnxruntime, torch; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), '| torch', torch.__version__)"
serve() {  # serve NAME ARGS...: one bench_serve.py run into OUT/serve_cuda_NAME.md/.json
  local name=$1
  shift
  python3 bench/bench_serve.py --device cuda --precision fp16 --models minilm --max-batch 128 --load-procs 8 \
    --num-cpus 1 --workdir /tmp/bench_serve "$@" --out "$out/serve_cuda_$name.md" ${BENCH_ARGS:-}
}
for phase in $phases; do
  case $phase in
  check)
    python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_export_formats.py -k cuda_graphs \
      --tb=short 2>&1 | grep -v "DEBUG *torch" | tail -30 || true
    python3 - <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "bench")
from serve_models import export_model, offline_throughput
path = export_model("minilm", Path("/tmp/bench_serve/models"), "torch_export")
batches = (1, 8, 32, 64, 128, 256)
for graphs in (0, max(batches)):
    rows = offline_throughput(path, batches, 1, 1.0, True, "fp16", graphs)
    print("offline fp16", "CUDA graphs" if graphs else "op by op  ", " ".join(
        f"b{b}: {r['ms_per_call']:.2f} ms {r['samples_per_s']:.0f}/s" for b, r in rows.items()), flush=True)
EOF
    ;;
  one) serve 1replica --replicas 1 --servers serve-adaptive --clients 16,64 --rates 2000,4000,8000 --seconds 3 \
    --batches 1,32,128 ;;
  four) serve 4replicas --replicas 4 --servers serve-unbatched,serve-adaptive,fastapi --clients 16,64,256 \
    --rates 2000,4000,8000,16000 --seconds 3 --batches 1,128 ;;
  *) echo "unknown phase $phase (check, one, four)" >&2; exit 2 ;;
  esac
done
