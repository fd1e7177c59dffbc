"""``lwlc fit|validate|test|predict --help`` and unknown-flag errors answered from what the real
LightningCLI printed and declared before (lwlc.commands.lightning_cache): the same text, in a
fresh interpreter that imports neither torch nor Lightning (checked via sys.modules)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lwlc.commands import lightning_cache
from lwlc.commands.cli import main
from lwlc_runs import DIGITS

HEAVY = ("torch", "lightning", "torchvision", "torchmetrics", "matplotlib")
ERRORS = [
    ["fit", "--trainer.max_epoch", "5"],  # the nearest valid flag is named
    ["validate", "--bogus", "x", "--seed=3"],
    ["fit", "--config", DIGITS, "--trainer.max_epoch", "5"],  # a typo after a config
    ["fit", "-c", DIGITS, "--bogus", f"--config={DIGITS}"],
]
PROBE = """
import json, sys
sys.argv[0] = "lwlc"
from lwlc.commands.cli import main
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit as exit:
        print(f"exit {exit.code}", file=sys.stderr)
print(json.dumps(sorted(set(sys.argv[2].split(",")) & set(sys.modules))))
"""


def real(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """stdout and stderr of ``lwlc argv`` in this process (the real LightningCLI's answer)."""
    with pytest.raises(SystemExit) as exit:
        main(argv)
    out, err = capsys.readouterr()
    return out, f"{err}exit {exit.value.code}\n"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of this test's own; a fixed program name and terminal width."""
    monkeypatch.setenv("LWLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr(sys, "argv", ["lwlc"])
    lightning_cache.installed.cache_clear()
    return tmp_path


def test_help_and_unknown_flags_answer_as_lightning_without_importing_it(
    cache, capsys, monkeypatch
):
    monkeypatch.setenv("LWLC_CACHE_DIR", "")  # the real answers, nothing recorded
    expected = [real(argv, capsys) for argv in [["fit", "--help"], *ERRORS]]
    monkeypatch.setenv("LWLC_CACHE_DIR", str(cache))
    assert expected == [real(argv, capsys) for argv in [["fit", "--help"], *ERRORS]]  # recording
    assert "--trainer.max_epochs" in expected[0][0] and "--model" in expected[0][0]
    assert "did you mean --trainer.max_epochs?" in expected[1][1]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([["fit", "--help"], *ERRORS]), ",".join(HEAVY)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    *help_lines, heavy = result.stdout.splitlines(keepends=True)
    assert json.loads(heavy) == []
    assert "".join(help_lines) == expected[0][0]
    assert result.stderr == "".join(err for _, err in expected)


def test_a_stale_record_or_an_uncertain_flag_goes_to_the_real_parser(cache, capsys, monkeypatch):
    real(["test", "--bogus"], capsys)  # records the options
    record = lightning_cache.read("test", "options")
    assert lightning_cache.unknown_flags(["--bogus"], record) is not None
    for args in (["--model.init_args.widht", "3"], ["--trainer.max_epochs.x", "3"],
                 ["-c", "x.yaml", "--bogus"], ["--trainer.callbacks+", "x"]):  # fmt: skip
        assert lightning_cache.unknown_flags(args, record) is None, args
    monkeypatch.setenv("JSONARGPARSE_DEFAULT_ENV", "true")  # changes the parser: not the same
    lightning_cache.installed.cache_clear()
    assert lightning_cache.read("test", "options") is None
