"""The lwlc command: the demo config end to end, checkpoint contents, errors and dispatch."""

import csv
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from conftest import CONFIGS, REPO_ROOT
from lwlc.commands import cli
from lwlc.commands.cli import main
from lwlc.commands.errors import argument_error, config_error
from lwlc.core.errors import LwlcError, readable_bytes
from lwlc.models import MLP

DIGITS = str(CONFIGS / "digits_mlp.yaml")
RUN = Path("runs/digits_mlp")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`lwlc fit` then `lwlc test` of the demo config, run as a user would, in a fresh folder."""
    folder = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        main(["fit", "--config", DIGITS, "--trainer.enable_progress_bar", "false"])
        last = str(RUN / "checkpoints" / "last.ckpt")
        main(
            ["test", "--config", DIGITS, "--ckpt_path", last, "--trainer.enable_progress_bar=false"]
        )
        yield folder


def read_metrics(path: Path) -> dict[str, float]:
    """Every non-empty value of a CSVLogger metrics file (the last one wins)."""
    values: dict[str, float] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            values.update({key: float(value) for key, value in row.items() if value != ""})
    return values


def test_demo_config_trains_both_members_to_95_percent_test_accuracy(digits_run: Path) -> None:
    metrics = read_metrics(digits_run / RUN / "logs" / "version_1" / "metrics.csv")
    assert metrics["a/test/acc"] >= 0.95
    assert metrics["b/test/acc"] >= 0.95


def test_checkpoint_holds_only_plain_data_and_says_how_the_pair_was_made(digits_run: Path) -> None:
    checkpoint = torch.load(digits_run / RUN / "checkpoints" / "last.ckpt", weights_only=True)
    max_epochs = yaml.safe_load(Path(DIGITS).read_text())["trainer"]["max_epochs"]
    assert checkpoint["epoch"] == max_epochs - 1
    assert checkpoint["lwlc_pairing"] == {
        "init": "shared",
        "order": "different",
        "init_seed_a": 0,
        "init_seed_b": 0,
        "order_seed_a": 0,
        "order_seed_b": 1,
        "spawn_steps": 0,
        "data": "whole",
    }
    hparams = checkpoint["hyper_parameters"]
    assert hparams["_class_path"] == "lwlc.training.PairedModule"
    assert hparams["model"]["class_path"] == "lwlc.models.MLP"
    assert checkpoint["datamodule_hyper_parameters"]["order_seeds"] == [0, 1]

    state = checkpoint["state_dict"]
    members = {}
    for prefix in ("net_a.", "net_b."):
        net = MLP(**hparams["model"]["init_args"])
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        net.load_state_dict(own)  # strict: exactly the architecture's keys
        members[prefix] = own
    assert len(members["net_a."]) + len(members["net_b."]) == len(state)
    assert not torch.equal(members["net_a."]["head.weight"], members["net_b."]["head.weight"])


def test_the_best_checkpoint_by_a_validation_accuracy_is_kept_too(digits_run: Path) -> None:
    (best,) = (digits_run / RUN / "checkpoints").glob("best-*.ckpt")
    checkpoint = torch.load(best, weights_only=True)
    best_epoch = checkpoint["epoch"]
    val_acc = {}
    with (digits_run / RUN / "logs" / "version_0" / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            if row["a/val/acc"]:
                val_acc[int(row["epoch"])] = float(row["a/val/acc"])
    assert val_acc[best_epoch] == max(val_acc.values())
    assert all(val_acc[e] < val_acc[best_epoch] for e in val_acc if e < best_epoch)


def test_a_second_run_in_the_same_folder_never_overwrites_the_first_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", DIGITS, "--trainer.max_epochs", "1"]
    main(args)
    first = (RUN / "checkpoints" / "last.ckpt").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(args)
    assert "holds an earlier run" in capsys.readouterr().err
    assert (RUN / "checkpoints" / "last.ckpt").read_bytes() == first
    assert not (RUN / "checkpoints" / "last-v1.ckpt").exists()


def test_a_second_run_without_logger_in_the_same_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", DIGITS, "--trainer.max_epochs", "1", "--trainer.logger", "false"]
    main(args)
    checkpoints = {p: p.read_bytes() for p in (RUN / "checkpoints").iterdir()}
    config = (RUN / "config.yaml").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(args)
    err = capsys.readouterr().err
    assert "holds an earlier run (barriers/, checkpoints/, config.yaml)" in err
    assert {p: p.read_bytes() for p in (RUN / "checkpoints").iterdir()} == checkpoints
    assert (RUN / "config.yaml").read_bytes() == config


def run_lwlc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command as a user runs it: a fresh process, no test harness in between."""
    return subprocess.run(
        [sys.executable, "-m", "lwlc.commands.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(errors) == 1 and errors[0].startswith("lwlc: error: "), result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_a_misspelt_config_key_is_one_error_line(tmp_path: Path) -> None:
    result = run_lwlc("fit", "--config", DIGITS, "--model.init_args.init_sed_a", "3", cwd=tmp_path)
    assert_one_error_line(result, "invalid configuration", "init_sed_a")


def test_missing_cifar_files_offline_are_one_error_line(tmp_path: Path) -> None:
    config = str(CONFIGS / "cifar10_resnet18.yaml")
    missing = str(tmp_path / "no_cifar_here")
    result = run_lwlc(
        "fit", "--config", config, "--data.init_args.root", missing,
        "--data.init_args.download", "false", "--trainer.accelerator", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert_one_error_line(result, "CIFAR-10", missing)


def test_invalid_yaml_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer:\n  max_epochs: [1\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(broken)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lwlc: error: invalid configuration:") and "\n" not in err


def test_debug_flag_and_environment_show_the_exception_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(CONFIGS / "cifar10_vgg.yaml")
    args = ["fit", "--config", config, "--data.init_args.root", str(tmp_path / "none")]
    args += ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true"]
    with pytest.raises(LwlcError, match="CIFAR-10 not found"):
        main([*args, "--debug"])
    monkeypatch.setenv("LWLC_DEBUG", "1")
    with pytest.raises(LwlcError, match="CIFAR-10 not found"):
        main(args)


def test_config_error_keeps_the_full_key_and_the_innermost_reason() -> None:
    message = (
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n  Subtypes: '
        "[<class 'LightningModule'>, <class 'NoneType'>]\n  Errors:\n    - Problem with given "
        "class_path 'lwlc.training.PairedModule':\n        Parser key \"model\":\n          "
        "Problem with given class_path 'lwlc.models.MLP':\n            Option 'widht' is not "
        "accepted\n    - Expected a <class 'NoneType'>\n  Given value type: <class 'NestedArg'>"
    )
    assert config_error(message) == "model.init_args.model: Option 'widht' is not accepted"
    assert config_error("Subcommand 'fit' does not accept option 'x'") == (
        "Subcommand 'fit' does not accept option 'x'"
    )


def test_tool_commands_are_dispatched_to_their_module_with_the_remaining_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    received = []
    tool = types.ModuleType("lwlc.commands.faketool")
    tool.main = received.append
    monkeypatch.setitem(sys.modules, "lwlc.commands.faketool", tool)
    monkeypatch.setitem(cli.TOOL_COMMANDS, "faketool", "a stand-in tool")
    main(["faketool", "--out", "x", "--debug"])
    assert received == [["--out", "x"]]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["absenttool"], "'lwlc absenttool' is not available"),
        (["frobnicate"], "unknown command 'frobnicate'; available: fit, validate"),
    ],
)
def test_unavailable_or_unknown_commands_are_one_error_line(
    argv: list[str],
    fragment: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(cli.TOOL_COMMANDS, "absenttool", "a tool that is not installed")
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lwlc: error: ") and fragment in err and err.count("\n") == 1


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    out = capsys.readouterr().out
    for command in [*cli.LIGHTNING_COMMANDS, *cli.TOOL_COMMANDS]:
        assert f"  {command} " in out


def test_fit_help_shows_the_pair_and_checkpoint_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--data", "--optimizer", "--checkpoint.dirpath", "--num_threads"):
        assert option in out


def test_every_shipped_config_parses(capsys: pytest.CaptureFixture[str]) -> None:
    configs = sorted(CONFIGS.glob("*.yaml"))
    assert {c.name for c in configs} >= {"digits_mlp.yaml", "cifar10_resnet18.yaml"}
    for config in configs:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(config), "--print_config"])
        assert exit_info.value.code == 0, config
        module = "ClassifierModule" if config.stem.endswith("_single") else "PairedModule"
        assert f"class_path: lwlc.training.{module}" in capsys.readouterr().out, config


def test_readme_opens_with_the_two_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert first_block.split() == ["make", "demo", "make", "test"]


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (420, "420 B"), (1024, "1 KiB"), (2400, "2.34 KiB"), (107374, "105 KiB"),
     (1.5 * 2**30, "1.5 GiB")],
)  # fmt: skip
def test_sizes_in_messages_keep_three_significant_digits(n: float, text: str) -> None:
    assert readable_bytes(n) == text


def test_a_wrong_number_names_the_flag_the_value_and_why() -> None:
    nan = 'Parser key "alpha":\n  Expected a <class \'float\'>. Got value: nan'
    assert str(argument_error(ValueError(nan), "merge")) == (
        "--alpha: expected a number, got 'nan' (NaN and infinity are not numbers here) "
        "(see lwlc merge --help)"
    )
    union = (
        'Parser key "memory_budget":\n  Does not validate against any of the Union subtypes\n'
        "  Subtypes: [<class 'float'>, <class 'NoneType'>]\n  Errors:\n    - Expected a <class "
        "'float'>\n    - Expected a <class 'NoneType'>\n  Given value type: <class 'str'>\n"
        "  Given value: lots"
    )
    assert config_error(union) == "memory_budget: expected a number, got 'lots'"


def test_a_run_without_validation_split_keeps_last_ckpt_and_warns_nothing(tmp_path, recwarn):
    """The paper configs train on the whole training set (val_size 0): there is no a/val/acc
    to rank a best checkpoint by, so none is made and Lightning has nothing to warn about."""
    from lwlc_runs import fit_pair

    last = fit_pair(tmp_path / "run", "--data.init_args.val_size", "0")
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]
    assert not [w for w in recwarn if "monitored key" in str(w.message)]
