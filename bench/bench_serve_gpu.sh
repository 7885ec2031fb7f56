#!/usr/bin/env bash
# One H200: MiniLM (64 tokens) served by Ray Serve from its torch.export program in fp16 (the image's ONNX Runtime
# has no CUDA provider), unbatched against adaptive batching and the FastAPI peer, after torch's offline batched
# throughput of the same program; open loop at fixed rates (closed loop past the knee measures refusals). On the GPU host, in the project's root (see BENCHMARKS.md, Serving):
#   source .gpu/unpack.sh; bash bench/bench_serve_gpu.sh OUT_DIR
set -euo pipefail
out=${1:-/tmp/serve_gpu}
mkdir -p "$out"
python3 -m compileall -q -j 16 /tmp/site deepseek_ray bench >/dev/null 2>&1 || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import onnxruntime, torch; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), '| torch', torch.__version__)"
python3 bench/bench_serve.py --device cuda --precision fp16 --models minilm \
  --servers serve-unbatched,serve-adaptive,fastapi --clients 1,16,64 --rates 400,1000,2000,4000,8000 \
  --replicas 4 --num-cpus 1 \
  --max-batch 128 --batches 1,8,32,64,128,256 --load-procs 8 --seconds 4 --workdir /tmp/bench_serve \
  --out "$out/serve_cuda.md" ${BENCH_ARGS:-}
cp bench/results/serve_cuda_*.json "$out/" 2>/dev/null || true
