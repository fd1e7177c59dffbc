"""Fast answers: help and argument errors of every command import no heavy package; the tools
import the errors module, never the dispatcher; --print_config writes lists as lists; make setup
says what it installs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT
from lwlc.commands.cli import main

HEAVY = ("lightning", "torchvision", "torchmetrics", "wandb", "transformers", "matplotlib")
# Each command's help and a few of its argument or file errors, as a user types them.
ANSWERS = [
    ["--help"],
    ["anlyze"],
    ["analyze", "--help"],
    ["plot", "--help"],
    ["merge", "--help"],
    ["experiment", "--help"],
    ["analyze", "--bogus"],
    ["analyze", "--ckpt", "missing.ckpt", "--alpha", "0.5"],
    ["merge", "--alpha", "2"],
    ["plot", "--out"],
    ["fit", "--config", "missing.yaml"],
    ["validate", "--ckpt_path", "missing.ckpt"],
]
PROBE = """
import json, sys
from lwlc.commands.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
        codes.append(0)
    except SystemExit as exit:
        codes.append(exit.code)
print(json.dumps({"codes": codes, "heavy": sorted(set(sys.argv[2].split(",")) & set(sys.modules))}))
"""


def test_help_and_argument_errors_import_no_heavy_package(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(ANSWERS), ",".join(HEAVY)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["codes"] == [0, 2, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lwlc: error: ")]
    assert len(errors) == 7 and "Traceback" not in result.stderr
    assert "--config file missing.yaml does not exist" in result.stderr


def _imports(path: Path) -> set[str]:
    """The modules a source file imports (anywhere in it)."""
    tree = ast.parse(path.read_text())
    found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found


# The answers of commands that declare no network class import not even torch (analyze and merge
# declare --model as a subclass of torch's nn.Module, so theirs import torch, and only torch).
TORCH_FREE = [
    ["--help"],
    ["anlyze"],
    ["plot", "--help"],
    ["experiment", "--help"],
    ["plot", "--out"],
    ["plot", "missing_run"],
    ["experiment", "--bogus"],
    ["experiment", "nosuchrecipe"],
    ["fit", "--config", "missing.yaml"],
    ["validate", "--ckpt_path", "missing.ckpt"],
]


def test_answers_of_commands_without_a_network_import_not_even_torch(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(TORCH_FREE), "torch"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["codes"] == [0, 2, 0, 0, 2, 2, 2, 2, 2, 2]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lwlc: error: ")]
    assert len(errors) == 7 and "Traceback" not in result.stderr
    assert "missing_run is not a directory" in result.stderr


def test_no_command_imports_the_dispatcher_that_loads_commands_by_name() -> None:
    commands = REPO_ROOT / "src" / "lwlc" / "commands"
    for tool in ("analyze", "plot", "merge", "lightning_cli", "lightning_setup", "errors"):
        assert "lwlc.commands.cli" not in _imports(commands / f"{tool}.py"), tool


def test_print_config_writes_lists_as_lists_and_no_stale_derived_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["analyze", "--alphas", "0,0.25,1", "--plans", "full,single", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["alphas"] == [0.0, 0.25, 1.0] and config["plans"] == ["full", "single"]
    assert config["splits"] == ["test"] and "num_alphas" not in config
    with pytest.raises(SystemExit):
        main(["analyze", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["alphas"] is None and config["num_alphas"] == 11


def test_make_setup_says_what_it_installs_and_how_long() -> None:
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "setup"],  # no "Entering directory" line
        capture_output=True, text=True, cwd=REPO_ROOT, check=True,
    )
    first = dry.stdout.splitlines()[0]
    assert first.startswith("echo") and "torch" in first and "minutes" in first
