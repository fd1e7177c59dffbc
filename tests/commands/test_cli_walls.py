"""The small walls of issue 27 on the Lightning commands: validate a checkpoint without its config,
one network of a pair checkpoint in Python, no abbreviated flags, the resume command after Ctrl-C,
missing data found before any logger or folder, bf16 on a CPU, the first epoch's estimate."""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

import pytest
import torch
import yaml

import lwlc
from conftest import CONFIGS
from lwlc.commands.cli import main
from lwlc.training import PairedModule
from lwlc_runs import DIGITS, QUIET, fit_pair, members


def _fit_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``lwlc fit`` expecting a user error; its one stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("lwlc: error: "), err
    return err


def _val_metrics(out: str) -> dict[str, float]:
    """The metric rows of Lightning's printed results table."""
    rows = [line.strip("│┃ ").split("│") for line in out.splitlines() if "/val/" in line]
    return {name.strip(): float(value) for name, value in (r for r in rows if len(r) == 2)}


def test_validate_of_a_checkpoint_needs_no_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # validate's own files (config.yaml) go to the working folder
    ckpt = fit_pair(tmp_path / "run")
    capsys.readouterr()
    main(["validate", "--ckpt_path", str(ckpt), *QUIET])
    without = _val_metrics(capsys.readouterr().out)
    main(["validate", "--config", DIGITS, "--ckpt_path", str(ckpt), *QUIET])
    given = _val_metrics(capsys.readouterr().out)
    assert set(without) == {"a/val/acc", "a/val/loss", "b/val/acc", "b/val/loss"}
    assert without == given


def test_load_network_returns_one_member_of_a_pair_with_its_weights(tmp_path: Path) -> None:
    ckpt = fit_pair(tmp_path / "run")
    expected = members(ckpt)  # read with torch.load, prefixes stripped by hand
    for member in ("a", "b"):
        net = lwlc.load_network(ckpt, member=member)
        assert isinstance(net, torch.nn.Module) and not net.training
        state = net.state_dict()
        assert state.keys() == expected[member].keys()
        assert all(torch.equal(state[k], expected[member][k]) for k in state)
    with pytest.raises(lwlc.core.errors.LwlcError, match="member 'c' is not in it"):
        lwlc.load_network(ckpt, member="c")


def test_an_abbreviated_flag_is_refused_and_the_nearest_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fit_error(capsys, "--config", DIGITS, "--trainer.max_epoch", "5", "--print_config")
    assert "--trainer.max_epoch" in err and "did you mean --trainer.max_epochs?" in err
    with pytest.raises(SystemExit):
        main(["analyze", "--ckpt", "x.ckpt", "--alpha", "0.5"])
    assert "did you mean --alphas?" in capsys.readouterr().err


def test_a_mistyped_key_inside_a_class_names_the_nearest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = "--model.init_args.model.init_args.widht"
    err = _fit_error(capsys, "--config", DIGITS, key, "8", "--print_config")
    assert "'widht'" in err and "did you mean width?" in err


def test_ctrl_c_during_fit_prints_the_command_that_resumes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    step = PairedModule.training_step

    def interrupted_in_epoch_2(self: PairedModule, *args: object, **kwargs: object) -> object:
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(PairedModule, "training_step", interrupted_in_epoch_2)
    root = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after a Ctrl-C
    try:
        with pytest.raises(SystemExit):
            fit_pair(root, "--trainer.max_epochs", "2", batches=3)
    finally:
        signal.signal(signal.SIGINT, handler)
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "resume with: " in x)
    command = shlex.split(line.split("resume with: ", 1)[1])
    last = root / "checkpoints" / "last.ckpt"
    assert command[0] == "lwlc" and command[-2:] == ["--ckpt_path", str(last)]
    assert torch.load(last, weights_only=True)["epoch"] == 0
    monkeypatch.setattr(PairedModule, "training_step", step)
    main(command[1:])
    resumed = torch.load(last, weights_only=True)
    assert (resumed["epoch"], resumed["global_step"]) == (1, 2 * 3)


def test_missing_data_is_found_before_any_logger_and_names_the_root_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    err = _fit_error(
        capsys,
        "--config", str(CONFIGS / "cifar10_vgg.yaml"),
        "--trainer.default_root_dir", str(root),
        "--data.init_args.root", str(tmp_path / "nodata"),
        "--model.init_args.model.init_args.width", "8",
    )  # fmt: skip
    assert "--data.init_args.root" in err and str(tmp_path / "nodata") in err
    assert not root.exists()


def test_bf16_on_a_cpu_trains_in_32_bit_saying_so_and_the_first_epoch_estimates_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    precision = ["--trainer.accelerator", "cpu", "--trainer.precision", "bf16-mixed"]
    fit_pair(root, *precision, "--trainer.max_epochs", "3", batches=2)
    out = capsys.readouterr().out
    assert sum("instead of the config's bf16-mixed" in line for line in out.splitlines()) == 1
    saved = yaml.safe_load((root / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == "32-true"
    estimate = [line for line in out.splitlines() if line.startswith("lwlc: epoch 1 of 3 took")]
    assert len(estimate) == 1 and "the 2 left take about" in estimate[0]
