"""Packaging: pyproject declares every package lwlc imports, caps none at a patch release, and
the commands import optional packages only when they use them."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO_ROOT
from lwlc_runs import DIGITS, QUIET

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli there
    import tomli as tomllib

SOURCES = REPO_ROOT / "src" / "lwlc"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
# Import names that differ from the distribution's name.
DISTRIBUTIONS = {"yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow"}


# Subpackages that only an extra's users import (``import lwlc.flower``): their module-level
# imports count as lazy, so they must be declared by an extra rather than by the dependencies.
OPTIONAL_SUBPACKAGES = ("flower",)


def _imports() -> dict[str, bool]:
    """Every third-party top-level module imported under src/lwlc, and whether some file imports
    it at module level (not only inside a function)."""
    found: dict[str, bool] = {}
    for file in SOURCES.rglob("*.py"):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        optional = file.relative_to(SOURCES).parts[0] in OPTIONAL_SUBPACKAGES
        module_level = set() if optional else {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "lwlc" and top not in sys.stdlib_module_names:
                    found[top] = found.get(top, False) or id(node) in module_level
    return found


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_every_third_party_module_lwlc_imports_is_declared() -> None:
    imports = _imports()
    assert {"torch", "yaml", "tqdm", "pandas", "scipy", "matplotlib"} <= imports.keys()
    required = _names(PYPROJECT["dependencies"])
    extras = {
        name
        for extra, reqs in PYPROJECT["optional-dependencies"].items()
        if extra != "dev"
        for name in _names(reqs)
    }
    installed = importlib.metadata.packages_distributions()
    for module, at_module_level in sorted(imports.items()):
        distribution = canonicalize_name(DISTRIBUTIONS.get(module, module))
        if module in installed:  # the name map agrees with what is installed
            assert distribution in {canonicalize_name(d) for d in installed[module]}, module
        declared = required if at_module_level else required | extras
        assert distribution in declared, (
            f"src/lwlc imports {module} ({'at module level' if at_module_level else 'lazily'}) "
            f"but pyproject does not declare {distribution}"
        )


def test_no_requirement_is_capped_below_a_major_release() -> None:
    requirements = [
        *PYPROJECT["dependencies"],
        *(r for reqs in PYPROJECT["optional-dependencies"].values() for r in reqs),
    ]
    for text in requirements:
        for spec in Requirement(text).specifier:
            assert spec.operator not in ("==", "===", "<=", "~="), f"{text}: pinned or capped"
            if spec.operator == "<":
                cap = Version(spec.version)
                assert cap.release[1:] == (0,) * (len(cap.release) - 1), (
                    f"{text}: capped below {cap}, not below a major release"
                )


def test_setup_installs_what_pyproject_asks_without_pins() -> None:
    installs = [
        line for line in (REPO_ROOT / "Makefile").read_text().splitlines() if "pip install" in line
    ]
    assert installs
    assert not [line for line in installs if re.search(r"[=<>]=", line)], installs


WRAPPER = """
import json, sys
from lwlc.commands.cli import main

OPTIONAL = ("transformers", "tensorboard", "wandb", "lwlc.formats.hf")
for command in json.loads(sys.argv[1]):
    main(command)
    print("LOADED", json.dumps([m for m in OPTIONAL if m in sys.modules]), flush=True)
from torchmetrics.text.bert import BERTScore
import torchmetrics.functional.text.bert as bert
print("BERT", json.dumps(hasattr(bert, "AutoModel") and "transformers" in sys.modules))
"""


def test_fit_and_analyze_of_a_classifier_never_import_optional_packages(tmp_path: Path) -> None:
    assert importlib.util.find_spec("transformers"), "the dev extra installs transformers"
    root = tmp_path / "run"
    commands = [
        ["fit", "--config", DIGITS, "--trainer.default_root_dir", str(root),
         "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", *QUIET],
        ["analyze", "--ckpt", str(root / "checkpoints" / "last.ckpt"),
         "--out", str(tmp_path / "analysis"), "--alphas", "0,0.5,1", "--max-samples", "64"],
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps(commands)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines()
              if line.startswith("LOADED ")]  # fmt: skip
    assert loaded == [[], []]
    assert (tmp_path / "analysis" / "barriers.csv").is_file()
    # torchmetrics' own transformers metrics still work when a user imports them.
    assert "BERT true" in done.stdout
