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
