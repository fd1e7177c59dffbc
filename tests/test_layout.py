"""The layout shows the architecture: the math in ``lwlc.core`` imports only torch, and no
module reaches into another's private names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

SRC = Path(REPO_ROOT) / "src" / "lwlc"
EDGES = ("lightning", "wandb", "matplotlib", "seaborn", "pandas", "jsonargparse", "torchmetrics",
         "transformers", "safetensors", "yaml")


def test_the_core_imports_torch_and_nothing_of_the_edges() -> None:
    core = sorted(p.stem for p in (SRC / "core").glob("*.py") if p.stem != "__init__")
    assert {"engine", "interpolation", "layers", "spec", "barriers", "sweep"} <= set(core)
    script = (
        "import json, sys\n"
        + "".join(f"import lwlc.core.{name}\n" for name in core)
        + "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "torch" in loaded
    edges = [m for m in loaded if m.split(".")[0] in EDGES]
    others = [m for m in loaded if m.startswith("lwlc.") and not m.startswith("lwlc.core")]
    assert edges == [] and others == []


def _private_imports(path: Path) -> list[str]:
    """``from lwlc.x import _name`` and ``lwlc.x._name`` attribute reads in one file."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lwlc"):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    files = [*SRC.rglob("*.py"), *(Path(REPO_ROOT) / "experiments").rglob("*.py")]
    found = {str(p.relative_to(REPO_ROOT)): _private_imports(p) for p in files}
    assert {k: v for k, v in found.items() if v} == {}


def test_analyze_flags_and_the_api_take_measurespecs_fields_with_its_defaults() -> None:
    """One declaration per measurement option: analyze (and merge, made the same way) has a flag
    for every MeasureSpec field with the spec's default; the Python API takes the spec itself.
    (The Callback's ``spec:`` key: tests/tracking/test_callbacks.py.)"""
    import inspect
    from dataclasses import fields

    from lwlc.api import measure, select_layers
    from lwlc.commands import analyze
    from lwlc.core.spec import MeasureSpec

    defaults = vars(analyze.build_parser().get_defaults())
    spec = MeasureSpec()
    for field in fields(MeasureSpec):
        want, got = getattr(spec, field.name), defaults[field.name]
        if isinstance(want, (tuple, dict)):  # flags take lists ('name=pattern' for custom)
            want, got = list(want), list(got)
        assert got == want, field.name
    names = {f.name for f in fields(MeasureSpec)}
    for api_call in (measure, select_layers):
        params = set(inspect.signature(api_call).parameters)
        assert "spec" in params or not params & names, api_call.__name__


def _python_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_module_over_500_lines_and_no_function_over_60() -> None:
    """The limits that keep each module to one job (issue 24)."""
    long_modules = {
        str(p.relative_to(SRC)): n
        for p in _python_files()
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long_modules
    long_functions = []
    for p in _python_files():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long_functions.append(f"{p.relative_to(SRC)}:{node.name} ({length} lines)")
    assert not long_functions


def test_no_import_loop_through_importlib() -> None:
    """The dispatcher loads commands by name, and lwlc experiment loads experiments/*/recipe.py:
    neither the commands nor the recipes import back into what loads them."""

    def imported(path: Path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        return names

    for p in (SRC / "commands").glob("*.py"):
        if p.stem != "cli":
            assert "lwlc.commands.cli" not in imported(p), p
    recipes = sorted((Path(REPO_ROOT) / "experiments").glob("*/recipe.py"))
    assert recipes
    for recipe in recipes:
        assert not any(n.startswith("lwlc.commands") for n in imported(recipe)), recipe
    # ... nor does the toolkit they import (it runs fit and analyze themselves, not the dispatcher)
    assert "lwlc.commands.cli" not in imported(SRC / "recipes.py")
