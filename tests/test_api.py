"""The Python API: ``lwlc.measure`` and ``lwlc.merge_models`` give the CLI's numbers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import lwlc
from lwlc.commands.cli import main
from lwlc.core.errors import LwlcError
from lwlc.data import DigitsDataModule
from lwlc_runs import fit_pair, members, mlp_of

SPEC = {"plans": ["full", "single"], "alphas": [0, 0.5, 1], "max_samples": 200}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_pair(tmp_path_factory.mktemp("pair"))


def networks(ckpt: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A and B of a checkpoint as plain modules, read independently of lwlc's readers."""
    both = members(ckpt)
    a, b = mlp_of(ckpt), mlp_of(ckpt)
    a.load_state_dict(both["a"])
    b.load_state_dict(both["b"])
    return a, b


def cli_rows(out: Path, name: str) -> list[dict[str, str]]:
    with (out / name).open() as f:
        return list(csv.DictReader(f))


def test_measure_equals_lwlc_analyze(pair: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    main(
        ["analyze", "--ckpt", str(pair), "--out", str(out), "--no-plots"]
        + ["--plans", "full,single", "--alphas", "0,0.5,1", "--max-samples", "200"]
    )
    a, b = networks(pair)
    found = lwlc.measure(a, b, DigitsDataModule(), lwlc.MeasureSpec(**SPEC))
    for name, frame, value_columns in (
        ("curves.csv", found.curves, ("loss", "accuracy")),
        ("barriers.csv", found.barriers, ("loss_barrier", "error_barrier")),
    ):
        expected = cli_rows(out, name)
        assert len(expected) == len(frame)
        for want, got in zip(expected, frame.to_dict("records"), strict=True):
            for key in ("plan", "group", "rest_from", "split"):
                assert str(got[key]) == want[key]
            for key in value_columns:
                assert got[key] == pytest.approx(float(want[key]), abs=1e-7)


def test_tensors_and_a_dataloader_are_data_too(pair: Path) -> None:
    a, b = networks(pair)
    x, y = DigitsDataModule().tensors("test", 200)
    spec = lwlc.MeasureSpec(**SPEC)
    by_module = lwlc.measure(a, b, DigitsDataModule(), spec)
    by_tensors = lwlc.measure(a, b.state_dict(), (x, y), spec)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=37)
    by_loader = lwlc.measure(a, b, loader, spec)
    for other in (by_tensors, by_loader):
        assert other.barriers.loss_barrier.tolist() == pytest.approx(
            by_module.barriers.loss_barrier.tolist(), abs=1e-7
        )
    # the full model's barrier against the whole models, by hand from the curve
    c = by_module.curves
    full = c[(c.plan == "full") & (c.rest_from == "a")].sort_values("alpha").loss.tolist()
    by_hand = full[1] - (full[0] + full[2]) / 2
    assert by_module.barrier("full", "all", "midpoint") == pytest.approx(by_hand, abs=1e-12)


def test_merge_models_equals_lwlc_merge(pair: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged.pt"
    main(
        ["merge", "--ckpt", str(pair), "--groups", "fc1,head", "--alpha", "0.3", "--out", str(out)]
    )
    written = {
        k.removeprefix("net."): v
        for k, v in torch.load(out, weights_only=True)["state_dict"].items()
    }
    a, b = networks(pair)
    merged = lwlc.merge_models(a, b, ["fc1", "head"], alpha=0.3)
    state = merged.state_dict()
    assert set(state) == set(written)
    for k, v in state.items():
        assert torch.equal(v, written[k]), k
    # by hand: fc1 averaged, fc2 from A
    assert torch.allclose(state["fc1.weight"], 0.7 * a.fc1.weight + 0.3 * b.fc1.weight)
    assert torch.equal(state["fc2.weight"], a.fc2.weight)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("splits", ["tset"], "splits: 'tset' is not one of train, val, test"),
        ("plans", ["ful"], "plans: 'ful' is not one of full"),
        ("rest_from", ["c"], "rest_from: 'c' is not one of a, b"),
        ("bn", "rest", "bn: 'rest' is not one of keep, reset"),
        ("batch_size", 0, "batch_size must be a whole number >= 1, got 0"),
        ("alphas", [0, float("nan"), 1], "alphas must be numbers in [0, 1], got nan"),
        ("alphas", [0, 0.5], "must include 0 and 1"),
        ("memory_budget", float("inf"), "memory_budget is in GiB and must be a number > 0"),
    ],
)
def test_a_bad_spec_is_one_line(field: str, value: object, message: str) -> None:
    with pytest.raises(LwlcError) as err:
        lwlc.MeasureSpec(**{field: value})
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("field", "cli_value", "value"),
    [("bn", "rest", "rest"), ("bn_batch_size", "0", 0), ("bn_samples", "-3", -3),
     ("align", "git-rebasin", "git-rebasin")],
)  # fmt: skip
def test_analyze_merge_and_the_api_refuse_a_bad_value_in_the_same_words(
    pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str,
    cli_value: str, value: object,
) -> None:  # fmt: skip
    with pytest.raises(LwlcError) as err:
        lwlc.MeasureSpec(**{field: value})
    words = str(err.value).removeprefix(field)
    flag = f"--{field.replace('_', '-')}"
    for command in (
        ["analyze", "--ckpt", str(pair), "--out", str(tmp_path / "out")],
        ["merge", "--ckpt", str(pair), "--out", str(tmp_path / "m.ckpt")],
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            main([*command, flag, cli_value])
        assert capsys.readouterr().err.strip() == f"lwlc: error: {flag}{words}"


@pytest.mark.parametrize("command", ["analyze", "merge"])
def test_print_config_then_config_reproduces_the_run(
    pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """--print_config writes the options as YAML; --config of that file gives the same files
    as the command line (lists as YAML lists, repeatable options as lists)."""
    if command == "analyze":
        flags = ["--plans", "full,single", "--alphas", "0,0.5,1", "--max-samples", "100",
                 "--custom=x=fc1", "--custom", "y=fc2,head", "--no-plots"]  # fmt: skip
        result = "barriers.csv"
    else:
        flags = ["--groups", "fc1,head", "--alpha", "0.25"]
        result = ""
    first, second = (
        tmp_path / f"one{'.pt' if command == 'merge' else ''}",
        tmp_path / (f"two{'.pt' if command == 'merge' else ''}"),
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as printed:
        main([command, "--ckpt", str(pair), *flags, "--out", str(first), "--print_config"])
    assert printed.value.code == 0
    config = tmp_path / "options.yaml"
    config.write_text(capsys.readouterr().out)
    assert not first.exists()  # printing runs nothing
    main([command, "--config", str(config)])
    main([command, "--ckpt", str(pair), *flags, "--out", str(second)])
    if command == "analyze":
        assert (first / result).read_text() == (second / result).read_text()
        assert "custom,x" in (first / result).read_text()
    else:
        one, two = (torch.load(p, weights_only=True)["state_dict"] for p in (first, second))
        assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    listed = tmp_path / "listed.yaml"
    listed.write_text(
        config.read_text().replace("plans: full,single", "plans: [full, single]")
        .replace("groups: fc1,head", "groups: [fc1, head]")
        .replace(str(first), str(tmp_path / f"three{'.pt' if command == 'merge' else ''}"))
    )  # fmt: skip
    main([command, "--config", str(listed)])
    third = tmp_path / f"three{'.pt' if command == 'merge' else ''}"
    if command == "analyze":
        assert (third / result).read_text() == (second / result).read_text()
    else:
        assert torch.equal(
            torch.load(third, weights_only=True)["state_dict"]["net.fc1.weight"],
            torch.load(second, weights_only=True)["state_dict"]["net.fc1.weight"],
        )


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "--help"],
        ["merge", "--help"],
        ["fit", "--model.help", "lwlc.training.PairedModule"],
    ],
)
def test_help_reads_in_a_screen_or_two(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """No list of every nn.Module subclass in torch (it made --help 700-800 lines)."""
    with pytest.raises(SystemExit):
        main(argv)
    text = capsys.readouterr().out
    assert "known subclasses" not in text and "torch.nn.Bilinear" not in text
    assert len(text.splitlines()) < 130 and "--" in text
