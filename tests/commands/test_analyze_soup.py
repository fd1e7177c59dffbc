"""``lwlc analyze --soup``: the k-model barrier per group against a hand-written soup evaluated by
a plain loop, the pair's midpoint for two networks, merge's selection report, and bad input."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import lwlc
from engine_reference import full_batch_sgd, weighted_soup
from lwlc.commands.cli import main
from lwlc.data import DigitsDataModule
from lwlc.models import MLP

WIDTH = 16
GROUPS = ("fc1", "fc2", "fc3", "head")  # the MLP's layer groups, in forward order
NET = ["--model", "lwlc.models.MLP", "--model.init_args.width", str(WIDTH),
       "--model.init_args.depth", "3", "--data", "lwlc.data.DigitsDataModule"]  # fmt: skip


def trained(seed: int, steps: int = 40) -> dict[str, torch.Tensor]:
    """A small MLP from its own initialisation (``seed``), trained by plain full-batch SGD on
    digits (independent of lwlc's training)."""
    torch.manual_seed(seed)
    net = MLP(width=WIDTH, depth=3)
    x, y = DigitsDataModule().tensors("train")
    return full_batch_sgd(net, x, y, steps)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three float32 networks m0, m1, m2, and m0, m1 again in float64 (m0d, m1d)."""
    root = tmp_path_factory.mktemp("soup_nets")
    states = [trained(seed) for seed in (0, 1, 2)]
    paths = []
    for name, state in [*((f"m{i}", s) for i, s in enumerate(states)),
                        *((f"m{i}d", {k: v.double() for k, v in s.items()})
                          for i, s in enumerate(states[:2]))]:  # fmt: skip
        paths.append(root / f"{name}.pt")
        torch.save(state, paths[-1])
    return paths


@functools.cache
def split_data(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return DigitsDataModule().tensors(split)


def naive(state: dict, split: str) -> tuple[float, float]:
    """Mean cross-entropy and error (a fraction) of one state dict: a plain loop over batches."""
    net = MLP(width=WIDTH, depth=3).double()
    net.load_state_dict({k: v.double() for k, v in state.items()})
    x, y = split_data(split)
    loss, wrong = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(y), 100):
            logits = net.eval()(x[i : i + 100].double())
            loss += F.cross_entropy(logits, y[i : i + 100], reduction="sum").item()
            wrong += (logits.argmax(1) != y[i : i + 100]).sum().item()
    return loss / len(y), wrong / len(y)


def modules_of(plan: str, group: str) -> set[str]:
    """The layers a path averages: every one (full), one, or the first ones up to it."""
    if plan == "full":
        return set(GROUPS)
    if plan == "single":
        return {group}
    assert plan == "cumulative_front"
    return set(GROUPS[: GROUPS.index(group) + 1])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_three_networks_soup_barriers_equal_a_hand_written_soup_and_loop(files, tmp_path) -> None:
    out = tmp_path / "soup"
    weights = [0.5, 0.3, 0.2]
    main(["analyze", "--soup", "--ckpt", *map(str, files[:3]), *NET, "--weights", "0.5,0.3,0.2",
          "--rest-from", "a,c", "--plans", "full,single,cumulative_front", "--splits", "val,test",
          "--no-plots", "--out", str(out)])  # fmt: skip
    states = [torch.load(f, weights_only=True) for f in files[:3]]
    own = {sp: [naive(s, sp) for s in states] for sp in ("val", "test")}
    rows = read_csv(out / "soup_barriers.csv")
    expected = {("full", "all", "a", sp) for sp in ("val", "test")} | {
        (plan, g, r, sp) for plan in ("single", "cumulative_front") for g in GROUPS
        for r in "ac" for sp in ("val", "test")
    }  # fmt: skip
    assert {(r["plan"], r["group"], r["rest_from"], r["split"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for r in rows:
        modules = modules_of(r["plan"], r["group"])
        soup = weighted_soup(states, modules, weights, "abc".index(r["rest_from"]))
        loss, error = naive(soup, r["split"])
        mean_loss = sum(w * m[0] for w, m in zip(weights, own[r["split"]], strict=True))
        mean_error = sum(w * m[1] for w, m in zip(weights, own[r["split"]], strict=True))
        got = {k: float(r[k]) for k in r if k.endswith(("_loss", "_error", "_barrier"))}
        assert got == pytest.approx(
            {"soup_loss": loss, "soup_error": error, "members_loss": mean_loss,
             "members_error": mean_error, "loss_barrier": loss - mean_loss,
             "error_barrier": error - mean_error}, abs=1e-6,
        )  # fmt: skip
        assert r["k"] == "3" and [float(w) for w in r["weights"].split()] == weights
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["soup"]["rest_from"] == ["a", "c"]
    assert summary["soup"]["weights"] == {"a": 0.5, "b": 0.3, "c": 0.2}
    for i, name in enumerate("abc"):
        assert summary["endpoints"]["test"][f"loss_{name}"] == pytest.approx(own["test"][i][0])


def test_two_networks_soup_barrier_is_the_pair_midpoint_in_float64(files, tmp_path) -> None:
    pair = ["--ckpt-a", str(files[3]), "--ckpt-b", str(files[4]), *NET, "--splits", "test",
            "--plans", "full,single,cumulative_back", "--no-plots"]  # fmt: skip
    main(["analyze", *pair, "--alphas", "0,0.5,1", "--out", str(tmp_path / "pair")])
    main(["analyze", *pair, "--soup", "--out", str(tmp_path / "soup")])
    midpoint = {
        (r["plan"], r["group"], r["rest_from"]): r
        for r in read_csv(tmp_path / "pair" / "barriers.csv")
        if r["reference"] == "midpoint"
    }
    rows = read_csv(tmp_path / "soup" / "soup_barriers.csv")
    assert {(r["plan"], r["group"], r["rest_from"]) for r in rows} == set(midpoint)
    for r in rows:
        want = midpoint[(r["plan"], r["group"], r["rest_from"])]
        for column in ("loss_barrier", "error_barrier"):
            assert float(r[column]) == pytest.approx(float(want[column]), abs=1e-8, rel=0)


def test_merge_reports_the_same_weighted_k_model_barriers(files, tmp_path) -> None:
    """merge's selection report and analyze --soup give one number per group (weighted mean)."""
    ckpts, weights = list(map(str, files[:3])), ["--weights", "0.6,0.3,0.1", "--rest-from", "b"]
    merged = tmp_path / "k3.pt"
    main(["merge", "--ckpt", *ckpts, *NET, "--groups", "auto", "--budget", "0", *weights,
          "--out", str(merged)])  # fmt: skip
    main(["analyze", "--soup", "--ckpt", *ckpts, *NET, *weights, "--splits", "val,test",
          "--no-plots", "--out", str(tmp_path / "soup")])  # fmt: skip
    report = json.loads(Path(f"{merged}.selection.json").read_text())["soup_barriers"]
    rows = read_csv(tmp_path / "soup" / "soup_barriers.csv")
    assert {r["group"] for r in rows} == {*GROUPS, "all"} == set(report)
    for r in rows:
        assert float(r["loss_barrier"]) == pytest.approx(
            report[r["group"]][r["split"]], abs=1e-9
        )


def test_measure_soup_gives_the_commands_rows(files, tmp_path) -> None:
    states = [torch.load(f, weights_only=True) for f in files[:3]]
    net = MLP(width=WIDTH, depth=3)
    net.load_state_dict(states[0])
    spec = lwlc.MeasureSpec(plans=("single",), splits=("test",), rest_from=("b",))
    found = lwlc.measure_soup([net, *states[1:]], {"test": split_data("test")}, spec,
                              weights=[0.2, 0.2, 0.6], rest_from=["c"])  # fmt: skip
    soup = weighted_soup(states, {"fc2"}, [0.2, 0.2, 0.6], rest=2)
    own = [naive(s, "test")[0] for s in states]
    want = naive(soup, "test")[0] - (0.2 * own[0] + 0.2 * own[1] + 0.6 * own[2])
    assert found.barrier("single", "fc2", rest_from="c") == pytest.approx(want, abs=1e-6)
    assert list(found.barriers.group) == list(GROUPS) and set(found.barriers.rest_from) == {"c"}
    with pytest.raises(lwlc.core.errors.LwlcError, match="at least 2 networks"):
        lwlc.measure_soup([net], split_data("test"), lwlc.MeasureSpec())


def narrow(path: Path) -> Path:
    """A network of another width (8): a different architecture."""
    torch.manual_seed(0)
    torch.save(MLP(width=8, depth=3).state_dict(), path)
    return path


@pytest.mark.parametrize(
    "case, words",
    [
        ("one", "holds a single network"),
        ("sum", "--weights must sum to 1"),
        ("length", "--weights has 2 values for 3 networks"),
        ("narrow", "member c"),
        ("rest", "--rest-from: 'd' is not one of the members a, b, c"),
        ("measures", "--measures applies to a pair's analysis"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(files, tmp_path, capsys, case, words) -> None:
    three = [str(f) for f in files[:3]]
    flags = {
        "one": ["--ckpt", three[0]],
        "sum": ["--ckpt", *three, "--weights", "0.5,0.4,0.2"],
        "length": ["--ckpt", *three, "--weights", "0.5,0.5"],
        "narrow": ["--ckpt", *three[:2], str(narrow(tmp_path / "narrow.pt"))],
        "rest": ["--ckpt", *three, "--rest-from", "a,d"],
        "measures": ["--ckpt", *three, "--measures", "weights"],
    }[case]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", "--soup", *flags, *NET, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("lwlc: data:")]
    assert exit_.value.code == 2 and len(err) == 1 and words in err[0], err
    assert not out.exists()


def test_two_networks_soup_is_the_pair_midpoint_with_bn_reset_and_alignment() -> None:
    """BatchNorm statistics recomputed and B aligned to A: still the pair's midpoint (float64)."""
    gen = torch.Generator().manual_seed(0)
    x, calibration = torch.randn(300, 12, generator=gen).double(), torch.randn(256, 12).double()
    y = torch.randint(0, 5, (300,), generator=gen)

    def net(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        layers = [torch.nn.Linear(12, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                  torch.nn.Linear(16, 5)]  # fmt: skip
        return torch.nn.Sequential(*layers).double().eval()

    spec = lwlc.MeasureSpec(plans=("full", "single"), splits=("test",), bn="reset",
                            align="weight-matching", alphas=(0, 0.5, 1))  # fmt: skip
    a, b = net(0), net(1)
    pair = lwlc.measure(a, b, {"test": (x, y)}, spec, calibration=calibration).barriers
    soup = lwlc.measure_soup([a, b], {"test": (x, y)}, spec, calibration=calibration).barriers
    key = ["plan", "group", "rest_from", "split"]
    both = pair[pair.reference == "midpoint"].merge(soup, on=key, suffixes=("_pair", "_soup"))
    assert len(both) == len(soup) == 2 * (1 + 2 * 3)  # full once, 3 groups x 2 rests; aligned
    for column in ("loss_barrier", "error_barrier"):
        assert (both[f"{column}_pair"] - both[f"{column}_soup"]).abs().max() < 1e-8


def test_soup_figures_are_drawn_and_overwrite_drops_them_with_the_csv(files, tmp_path) -> None:
    out = tmp_path / "soup"
    quick = ["--ckpt-a", str(files[0]), "--ckpt-b", str(files[1]), *NET, "--plans", "single",
             "--splits", "val,test", "--max-samples", "50", "--out", str(out)]  # fmt: skip
    main(["analyze", "--soup", *quick])
    assert {p.name for p in out.iterdir()} >= {"soup_barriers.csv", "soup_val.png",
                                              "soup_test.png", "summary.json"}  # fmt: skip
    main(["analyze", *quick, "--alphas", "0,0.5,1", "--no-plots", "--overwrite"])
    assert not [p.name for p in out.iterdir() if p.name.startswith("soup")]
    assert "soup" not in json.loads((out / "summary.json").read_text())
