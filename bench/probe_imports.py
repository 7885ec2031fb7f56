"""What a new Ray Train process pays before its first step: fresh-process import times and the CUDA context.

Each line runs in a new interpreter, twice. On a host whose Python never caches bytecode (``PYTHONDONTWRITEBYTECODE=1``
and no ``__pycache__`` shipped, as on the GPU hosts here) every figure includes compiling the modules from source;
``python -m compileall -q -j 16 <site-packages>`` first gives what a pip-installed environment pays.

    python bench/probe_imports.py
"""

from __future__ import annotations

import subprocess
import sys
import time

PROBES = {
    "python -c pass": "pass",
    "import ray": "import ray",
    "import torch": "import torch",
    "import ray.train.torch (what unpickling Ray's TorchConfig imports)": "import ray.train.torch",
    "import torch; CUDA context": "import torch, time; t = time.time(); torch.zeros(1, device='cuda'); print('cuda', round(time.time() - t, 2))",
    "import torch; import torch._dynamo (the first optimizer's)": "import torch, time; t = time.time(); import torch._dynamo; print('dynamo', round(time.time() - t, 2))",
}


def main() -> None:
    for label, code in PROBES.items():
        for attempt in range(2):
            start = time.time()
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            print(f"{label} [{attempt}]: {time.time() - start:.2f} s {out.stdout.strip()} {out.stderr.strip()[-200:]}", flush=True)


if __name__ == "__main__":
    main()
