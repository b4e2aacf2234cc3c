"""The layout's rules, enforced: the import contracts in pyproject.toml (lint-imports), shown to fail when a
rule breaks, what each layer loads at run time, and the size limits of modules and functions."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kdsearch"
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd):
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "8 kept, 0 broken" in out.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("engine/loop.py", "import mlflow", "kdsearch.engine.loop -> mlflow"),  # the engine runs without MLflow
    ("core/names.py", "from kdsearch.search import pipeline", "kdsearch.core.names -> kdsearch.search.pipeline"),
    ("report/tables.py", "import torch", "kdsearch.report.tables -> torch"),  # presentation imports no torch
    ("phase/trial.py", "import ray", "kdsearch.phase.trial -> ray"),
])
def test_breaking_a_rule_fails_the_contracts(tmp_path, module, line, broken):
    shutil.copytree(PACKAGE, tmp_path / "kdsearch", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "kdsearch" / module, "a") as f:
        f.write(f"\n{line}\n")
    out = lint(tmp_path)
    assert out.returncode != 0 and broken in out.stdout, out.stdout + out.stderr


def loaded(module, *packages):
    """Which of `packages` importing `module` loads, in a fresh interpreter."""
    code = f"import sys, {module}; print(' '.join(p for p in {list(packages)!r} if p in sys.modules))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_what_each_layer_loads():
    # the cheap checks before a search run without MLflow (3-4 s of imports, and a store created too early)
    assert loaded("kdsearch.search.pipeline", "mlflow") == []
    # the engine and the trial as a plain call: torch alone (a GPU box without Ray, Optuna or MLflow)
    assert loaded("kdsearch.phase.trial", "ray", "optuna", "mlflow", "pydantic") == []
    assert loaded("kdsearch.tools.bench", "ray", "optuna", "mlflow") == []
    # presentation and the MLflow layer: no torch
    assert loaded("kdsearch.report.build", "torch") == []
    assert loaded("kdsearch.tracking.tracker", "torch") == []


def functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}", node


def test_modules_and_functions_stay_short():
    long_modules = [f"{p.relative_to(PACKAGE)} ({n})" for p in PACKAGE.rglob("*.py")
                    if (n := len(p.read_text().splitlines())) > 250]
    assert long_modules == []
    long = [f"{name} ({node.end_lineno - node.lineno + 1} lines)" for name, node in functions()
            if node.end_lineno - node.lineno + 1 > 60]
    assert long == []


def test_no_function_takes_many_parameters():
    wide = []
    for name, node in functions():
        a = node.args
        names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
        positional = [x for x in a.posonlyargs + a.args if x.arg not in ("self", "cls")]
        required = len(positional) - len(a.defaults) + sum(d is None for d in a.kw_defaults)
        if required > 5 or len(names) + bool(a.vararg) + bool(a.kwarg) > 9:
            wide.append(f"{name} ({required} required, {len(names)} in all)")
    assert wide == []
