"""The code's layout holds: one package per stage, no lower package importing a higher one, no import moved
into a function to hide one, short modules, thin jobs whose flags come from the config dataclasses."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the stages in pipeline order; a package may import itself and those before it (osmf_core/demo.py runs them all)
LAYERS = ("data", "world", "models", "grouping", "features", "rendering", "training", "generation", "evaluation",
          "demo")
MODULE_LINES, JOB_LINES = 350, 60
# flags a job may declare by hand: they are no config field (the launcher's rank, where a summary goes, ...)
JOB_FLAGS = {"--summary-json", "--local_rank", "--list", "name", "--scale-point"}  # --scale-point: bench_regroup's own child runs


def _modules():
    return sorted(p for p in (ROOT / "osmf_core").rglob("*.py"))


def _layer(dotted: str) -> int | None:
    parts = dotted.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _osmf_imports(tree: ast.AST):
    """(line, imported module, inside a function?) of every osmf_core import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("osmf_core"):
            names = [f"{node.module}.{a.name}" if node.module == "osmf_core" else node.module for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("osmf_core")]
        else:
            continue
        for name in names:
            yield node.lineno, name, node.col_offset > 0


def test_every_module_sits_in_a_stage_package():
    loose = [p.name for p in (ROOT / "osmf_core").glob("*.py") if p.stem not in ("__init__", "demo")]
    assert loose == []
    assert {p.name for p in (ROOT / "osmf_core").iterdir() if p.is_dir() and (p / "__init__.py").exists()} == \
        set(LAYERS[:-1])


def test_no_package_imports_a_later_stage_and_no_import_hides_in_a_function():
    found = []
    for path in _modules():
        me = _layer(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for line, name, nested in _osmf_imports(ast.parse(path.read_text())):
            other = _layer(name)
            if nested:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name} inside a function")
            if me is not None and other is not None and other > me:
                found.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[me]}) imports {name} ({LAYERS[other]})")
    assert found == []


def test_the_layer_test_would_see_an_upward_import(tmp_path):
    bad = "def f():\n    from osmf_core.evaluation.online import table3\n"
    [(line, name, nested)] = list(_osmf_imports(ast.parse(bad)))
    assert (line, nested, _layer(name) > _layer("osmf_core.data.store")) == (2, True, True)


@pytest.mark.parametrize("folder, limit", [("osmf_core", MODULE_LINES), ("jobs", JOB_LINES)])
def test_modules_and_jobs_stay_short(folder, limit):
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / folder).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > limit}
    assert long == {}


def test_jobs_take_their_flags_from_the_configs_and_nothing_imports_a_job():
    hand_made = []
    for path in sorted((ROOT / "jobs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
                flag = getattr(node.args[0], "value", None)
                if flag not in JOB_FLAGS:
                    hand_made.append(f"{path.name}: {flag}")
    assert hand_made == []
    importers = [str(p.relative_to(ROOT)) for p in _modules() if "from jobs" in p.read_text()
                 or "import jobs" in p.read_text()]
    assert importers == []
    for path in sorted((ROOT / "tests").glob("test_*.py")):  # tests run a job through its main, never its insides
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jobs"):
                assert [a.name for a in node.names] == ["main"], f"{path.name}:{node.lineno}"
