"""The package's layers: every import, at module level or inside a function, points to an earlier stage.

The order (README, "Layout"): config, files, runtime, ray_compat, report, tracking (importing no stage)
→ data → nn → models → optim → {hpo, nas, train} → export → quantization → eval → deploy → the pipeline,
its stages and the CLI. ``config`` imports nothing of the package; among the middle siblings only nas uses
hpo (its spaces are hpo's).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "deepseek_ray"
LAYERS = [
    {"config", "files", "runtime", "ray_compat", "report", "tracking"},
    {"data"},
    {"nn"},
    {"models"},
    {"optim"},
    {"hpo", "nas", "train"},
    {"export"},
    {"quantization"},
    {"eval"},
    {"deploy"},
    {"pipeline", "stages", "cli", "__main__", "__init__"},
]
MIDDLE = {"hpo", "nas", "train"}  # siblings: none uses another, except nas using hpo
SIBLINGS_ALLOWED = {("nas", "hpo")}


def layer_of(unit: str) -> int:
    found = [i for i, units in enumerate(LAYERS) if unit in units]
    assert found, f"deepseek_ray.{unit} has no place in LAYERS: add it where its imports put it"
    return found[0]


def unit_of(path: Path) -> str:
    """The stage a file belongs to: its sub-package, or its own name for a top-level module."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def imported_units(path: Path) -> set[str]:
    """The package's stages that ``path`` imports, resolving relative imports."""
    package = ["deepseek_ray", *path.relative_to(PACKAGE).parts[:-1]]
    units = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "deepseek_ray" and len(parts) > 1:
                units.add(parts[1])
    return units


def test_every_import_points_to_an_earlier_stage():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = unit_of(path)
        for target in imported_units(path) - {source}:
            siblings = {source, target} <= MIDDLE and (source, target) not in SIBLINGS_ALLOWED
            if layer_of(target) > layer_of(source) or siblings or source == "config":
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)


def test_the_check_sees_function_level_and_relative_imports(tmp_path):
    probe = PACKAGE / "models" / "_layering_probe.py"
    probe.write_text("def f():\n    from ..export import ModelExporter\n")
    try:
        assert imported_units(probe) == {"export"}
        assert layer_of("export") > layer_of(unit_of(probe))
    finally:
        probe.unlink()
