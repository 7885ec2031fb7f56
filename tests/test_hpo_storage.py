"""The filesystem Tune writes the experiment folder through (``hpo/storage.py``): whole files, as Tune reads them."""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path

import pyarrow.fs as pafs

from deepseek_ray.hpo.storage import atomic_local_filesystem, copy_gate


def write(fs: pafs.FileSystem, path: Path, data: bytes) -> None:
    with fs.open_output_stream(str(path)) as out:
        out.write(data)


def test_an_experiment_state_is_committed_as_tune_writes_it_with_infinity_and_nan(tmp_path):
    fs, state = atomic_local_filesystem(), tmp_path / "experiment_state-2026.json"
    document = {"runner_data": {"_earliest_stopping_actor": float("inf")}, "trial_data": [{"loss": float("nan")}]}
    write(fs, state, json.dumps(document).encode())  # Python's json writes Infinity and NaN, and reads them
    assert json.loads(state.read_text())["runner_data"]["_earliest_stopping_actor"] == float("inf")


def test_a_cut_experiment_state_is_dropped_and_the_last_whole_one_stays(tmp_path):
    fs, state = atomic_local_filesystem(), tmp_path / "experiment_state-2026.json"
    write(fs, state, b'{"trial_data": [1]}')
    write(fs, state, b'{"trial_data": [1, 2')
    assert json.loads(state.read_text()) == {"trial_data": [1]}
    assert [p.name for p in tmp_path.iterdir()] == [state.name]  # no temporary file is left behind


def test_the_searchers_pickled_state_files_are_committed(tmp_path):
    fs = atomic_local_filesystem()
    for name in ("search_gen_state-2026.json", "basic-variant-state-2026.json", "searcher-state-2026.pkl"):
        write(fs, tmp_path / name, pickle.dumps({"counter": 4}))  # Tune pickles them, whatever the suffix
        assert pickle.loads((tmp_path / name).read_bytes()) == {"counter": 4}


def test_other_files_are_replaced_whole_and_copied(tmp_path):
    fs, result = atomic_local_filesystem(), tmp_path / "trial" / "result.json"
    fs.create_dir(str(result.parent))
    write(fs, result, b'{"loss": 1}\n{"loss": 0.5')  # JSON lines, not checked
    fs.copy_file(str(result), str(tmp_path / "copy.json"))
    assert (tmp_path / "copy.json").read_bytes() == result.read_bytes() == b'{"loss": 1}\n{"loss": 0.5'


def test_the_top_level_of_a_copy_goes_in_place_only_once_the_copy_has_ended(tmp_path):
    fs, folder = atomic_local_filesystem(), tmp_path / "search"
    gate, copied, release = copy_gate(str(folder)), threading.Event(), threading.Event()

    def copy() -> None:  # as Tune's copying thread does: the folder first, then each file of the save
        fs.create_dir(str(folder))
        write(fs, folder / "experiment_state-2026.json", b'{"trial_data": [1, 2]}')
        write(fs, folder / "search_gen_state-2026.json", pickle.dumps({"counter": 2}))
        copied.set()
        release.wait(10)

    gate.saved()
    copier = threading.Thread(target=copy)
    copier.start()
    copied.wait(10)
    assert not (folder / "experiment_state-2026.json").exists()  # held while the copy runs
    release.set()
    gate.wait()
    assert json.loads((folder / "experiment_state-2026.json").read_text()) == {"trial_data": [1, 2]}
    assert pickle.loads((folder / "search_gen_state-2026.json").read_bytes()) == {"counter": 2}
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left
