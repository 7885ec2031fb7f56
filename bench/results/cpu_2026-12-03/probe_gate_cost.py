"""Probe: our arm of the short workload with the copy gate on and off, interleaved."""
import sys, time, tempfile, statistics
sys.path.insert(0, "/work/main/bench"); sys.path.insert(0, "/work/main")
from deepseek_ray.hpo import storage as st
import bench_search_overhead as b
from search_session import quiet_search_session
from deepseek_ray.hpo import monitor
real_gate = monitor.copy_gate
rows = {"gate": [], "nogate": []}
quiet_search_session("gate-")
if True:
    for rep in range(int(sys.argv[1])):
        for arm in ("gate", "nogate"):
            monitor.copy_gate = real_gate if arm == "gate" else (lambda folder: st.CopyGate())
            b.idle()
            wall, epochs, actors = b.ours(40, 0.2, 1, tempfile.mkdtemp(), f"g{rep}{arm}")
            rows[arm].append(wall); print(arm, rep, round(wall, 2), "actors", actors, flush=True)
print({k: round(statistics.median(v), 2) for k, v in rows.items()})
