"""``lwlc merge --groups auto``: the chosen layers against an independent brute force, the written
model against a hand-computed state dict, the report against an independent evaluation."""

from __future__ import annotations

import csv
import functools
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine_reference import full_batch_sgd, weighted_soup
from lwlc.commands.cli import main
from lwlc.core.errors import LwlcError
from lwlc.core.selection import search
from lwlc.data import DigitsDataModule
from lwlc.models import MLP
from lwlc.results import style

WIDTH = 16
BUDGET = 0.01  # some layers, but not all, fit these nets
NET = ["--model", "lwlc.models.MLP", "--model.init_args.width", str(WIDTH),
       "--model.init_args.depth", "3", "--data", "lwlc.data.DigitsDataModule"]  # fmt: skip


def trained(seed: int, steps: int = 100) -> dict[str, torch.Tensor]:
    """A small MLP trained on digits by plain full-batch SGD (independent of lwlc's training),
    from one shared initialisation on a random half of the training set chosen by ``seed``."""
    torch.manual_seed(0)
    net = MLP(width=WIDTH, depth=3)
    x, y = DigitsDataModule().tensors("train")
    half = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[: len(y) // 2]
    x, y = x[half], y[half]
    return full_batch_sgd(net, x, y, steps)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("nets")
    paths = []
    for seed in (0, 1, 2):
        paths.append(root / f"m{seed}.pt")
        torch.save(trained(seed), paths[-1])
    return paths


@functools.cache
def split_data(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return DigitsDataModule().tensors(split)


def naive_loss(state: dict, split: str) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of one state dict, by a plain forward pass."""
    net = MLP(width=WIDTH, depth=3)
    net.load_state_dict(state)
    x, y = split_data(split)
    with torch.no_grad():
        logits = net.eval()(x)
    loss = F.cross_entropy(logits.double(), y).item()
    return loss, (logits.argmax(1) == y).double().mean().item()


def test_auto_selection_is_the_largest_fitting_subset_by_brute_force(files, tmp_path) -> None:
    out = tmp_path / "merged.pt"
    main(["merge", "--ckpt-a", str(files[0]), "--ckpt-b", str(files[1]), *NET,
          "--groups", "auto", "--budget", str(BUDGET), "--out", str(out)])  # fmt: skip
    a, b = (torch.load(f, weights_only=True) for f in files[:2])
    names = ["fc1", "fc2", "fc3", "head"]
    sizes = {n: a[f"{n}.weight"].numel() + a[f"{n}.bias"].numel() for n in names}
    ends = [naive_loss(s, "val")[0] for s in (a, b)]
    rest = min(range(2), key=ends.__getitem__)
    limit = min(ends) + BUDGET
    best, best_key = None, None
    for r in range(len(names) + 1):
        for subset in itertools.combinations(names, r):
            loss = naive_loss(weighted_soup([a, b], set(subset), [0.5, 0.5], rest), "val")[0]
            key = (sum(sizes[n] for n in subset), -loss)
            if loss <= limit and (best_key is None or key > best_key):
                best, best_key = subset, key
    report = json.loads(Path(f"{out}.selection.json").read_text())
    assert report["search"] == "exhaustive"
    assert best is not None and 0 < len(best) < len(names)  # a real choice
    assert report["chosen"] == list(best)
    assert report["models"]["chosen"]["val"]["loss"] == pytest.approx(-best_key[1], abs=1e-6)
    assert report["rest_from"] == "ab"[rest]
    # the written model is the hand-made average on the chosen groups, the rest from the better
    written = torch.load(out, weights_only=True)["state_dict"]
    expected = weighted_soup([a, b], set(best), [0.5, 0.5], rest)
    assert all(torch.equal(written[f"net.{k}"], v) for k, v in expected.items())
    # every named model's numbers, on the selection split and held out, independently
    full = weighted_soup([a, b], set(names), [0.5, 0.5], rest)
    for name, state in (
        ("member_a", a),
        ("member_b", b),
        ("chosen", expected),
        ("full_average", full),
    ):
        for split in ("val", "test"):
            loss, acc = naive_loss(state, split)
            assert report["models"][name][split]["loss"] == pytest.approx(loss, abs=1e-6)
            assert report["models"][name][split]["accuracy"] == pytest.approx(acc, abs=1e-9)
    with open(f"{out}.selection.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 ** len(names)  # every subset is a step
    assert sum(r["accepted"] == "True" for r in rows) == 1
    assert Path(f"{out}.selection.png").stat().st_size > 10_000


def test_selection_figure_marks_the_reported_models_on_one_axis(
    files, tmp_path, monkeypatch
) -> None:
    # The figure beside a selected merge, read back from its artists: the selection split first,
    # both panels on one y axis, the chosen star at the reported fraction and loss, the full
    # average at 1, the budget line (on the selection split only) at the better member + budget,
    # and every element named in the legend.
    drawn = {}
    save = style.save_figure  # write_report imports it when it draws
    monkeypatch.setattr(style, "save_figure", lambda f, p, **k: drawn.setdefault("fig", f)
                        and save(f, p, **k))  # fmt: skip
    out = tmp_path / "merged.pt"
    main(["merge", "--ckpt-a", str(files[0]), "--ckpt-b", str(files[1]), *NET,
          "--groups", "auto", "--budget", str(BUDGET), "--out", str(out)])  # fmt: skip
    report = json.loads(Path(f"{out}.selection.json").read_text())
    fig = drawn["fig"]
    val, test = fig.axes[:2]
    assert (val.get_title(), test.get_title()) == ("val (selection split)", "test (held out)")
    assert val.get_ylim() == test.get_ylim()
    a, b = (torch.load(f, weights_only=True) for f in files[:2])
    limit = min(naive_loss(s, "val")[0] for s in (a, b)) + BUDGET
    for ax, split in ((val, "val"), (test, "test")):
        points = {tuple(np.round(p, 6)) for c in ax.collections for p in c.get_offsets()}
        star = (report["fraction"], report["models"]["chosen"][split]["loss"])
        assert tuple(np.round(star, 6)) in points
        full = (1.0, report["models"]["full_average"][split]["loss"])
        assert tuple(np.round(full, 6)) in points
        levels = [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == ":"]
        assert levels == (pytest.approx([limit], abs=1e-6) if split == "val" else [])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["candidate (over budget)", "candidate (fits)", "model A", "model B",
                      f"budget (+{BUDGET:g} nats, val)", "full average", "chosen"]  # fmt: skip


def test_greedy_search_ends_maximal_and_every_accepted_set_was_measured() -> None:
    """Losses that do not add: a pair is worse than its members suggest."""
    sizes = [5, 4, 3, 2, 1]
    single = [0.1, 0.2, 0.3, 0.05, 0.4]

    def loss(members: frozenset[int]) -> float:
        penalty = 0.5 if {0, 3} <= members else 0.0
        return sum(single[i] for i in members) + penalty

    measured: list[frozenset[int]] = []

    def losses_of(sets):
        measured.extend(sets)
        return [loss(s) for s in sets]

    found = search(sizes, losses_of, limit=0.7, exhaustive_max=2)
    chosen = frozenset(found.chosen)
    assert found.search == "greedy" and loss(chosen) <= 0.7
    assert all(loss(chosen | {g}) > 0.7 for g in set(range(5)) - chosen)  # maximal
    assert all(frozenset(s.members) in measured for s in found.steps if s.accepted)
    exhaustive = search(sizes, lambda sets: [loss(s) for s in sets], 0.7, exhaustive_max=5)
    best = max((s for r in range(6) for s in itertools.combinations(range(5), r)
                if loss(frozenset(s)) <= 0.7), key=lambda s: sum(sizes[i] for i in s))  # fmt: skip
    assert exhaustive.chosen == best


def test_greedy_search_measures_a_few_sets_per_group_not_one_per_group_per_round() -> None:
    """30 groups whose losses add: the walk in single-barrier order takes every group that fits,
    one set per group, and the closing round proves maximality; a round-by-round search would
    measure 30 + 29 + ... sets (hundreds)."""
    n = 30
    single = [0.01 * ((7 * g) % n) for g in range(n)]  # a scrambled order of 0.00 .. 0.29
    measured: list[frozenset[int]] = []

    def losses_of(sets):
        measured.extend(sets)
        return [sum(single[i] for i in s) for s in sets]

    found = search([1] * n, losses_of, limit=1.0, exhaustive_max=12)
    cheapest = sorted(range(n), key=single.__getitem__)
    want = max(k for k in range(n + 1) if sum(single[g] for g in cheapest[:k]) <= 1.0)
    assert found.search == "greedy" and sorted(found.chosen) == sorted(cheapest[:want])
    assert len(measured) <= 3 * n


def test_greedy_search_keeps_room_for_a_large_layer_that_fits() -> None:
    """The ResNet case seen in experiment 9: a layer of 21% of the parameters fits alone, but
    small layers with lower single barriers, taken first, used the budget up (2.6% chosen). By
    loss per parameter the large layer goes first; brute force over the 2^13 subsets agrees."""
    sizes = [200] + [3] * 12
    base, limit = 0.30, 0.35
    extra = [0.03] + [0.004] * 12  # losses add: 0.03 (the large one) or 0.004 each above base

    def loss(members: frozenset[int]) -> float:
        return base + sum(extra[i] for i in members)

    found = search(sizes, lambda sets: [loss(s) for s in sets], limit, exhaustive_max=12 - 1)
    chosen = set(found.chosen)
    assert 0 in chosen and loss(frozenset(chosen)) <= limit
    subsets = [c for r in range(14) for c in itertools.combinations(range(13), r)]
    best = max(sum(sizes[i] for i in c) for c in subsets if loss(frozenset(c)) <= limit)
    assert sum(sizes[i] for i in chosen) == best  # 200 + 5 small ones = 215


def test_per_group_alphas_and_k_model_average_match_hand_computed(files, tmp_path) -> None:
    states = [torch.load(f, weights_only=True) for f in files]
    out = tmp_path / "alphas.pt"
    main(["merge", "--ckpt-a", str(files[0]), "--ckpt-b", str(files[1]), *NET,
          "--groups", "fc1,head", "--alpha", "fc1: 0.25, head: 0.75",
          "--out", str(out)])  # fmt: skip
    written = torch.load(out, weights_only=True)["state_dict"]
    a, b = states[:2]
    for k, v in a.items():
        alpha = {"fc1": 0.25, "head": 0.75}.get(k.rpartition(".")[0])
        want = v if alpha is None else (1 - alpha) * v + alpha * b[k]
        assert torch.equal(written[f"net.{k}"], want)
    soup = tmp_path / "soup.pt"
    main(["merge", "--ckpt", *map(str, files), *NET, "--groups", "fc2,fc3",
          "--weights", "0.5,0.25,0.25", "--rest-from", "c", "--out", str(soup)])  # fmt: skip
    written = torch.load(soup, weights_only=True)["state_dict"]
    expected = weighted_soup(states, {"fc2", "fc3"}, [0.5, 0.25, 0.25], rest=2)
    for k, v in expected.items():
        assert torch.allclose(written[f"net.{k}"], v, atol=1e-7, rtol=0)
    assert not torch.equal(expected["fc2.weight"], states[2]["fc2.weight"])
    assert torch.equal(written["net.fc1.weight"], states[2]["fc1.weight"])


def test_k_model_auto_selection_counts_the_budget_from_the_best_member(files, tmp_path) -> None:
    out = tmp_path / "k.pt"
    main(["merge", "--ckpt", *map(str, files), *NET, "--groups", "auto",
          "--budget", "0.1", "--out", str(out)])  # fmt: skip
    states = [torch.load(f, weights_only=True) for f in files]
    ends = [naive_loss(s, "val")[0] for s in states]
    best = min(range(3), key=ends.__getitem__)
    report = json.loads(Path(f"{out}.selection.json").read_text())
    assert report["rest_from"] == "abc"[best]
    assert report["limit"] == pytest.approx(ends[best] + 0.1, abs=1e-6)
    chosen = set(report["chosen"])
    expected = weighted_soup(states, chosen, [1 / 3] * 3, best)
    loss = naive_loss(expected, "val")[0]
    assert loss <= ends[best] + 0.1 + 1e-9
    assert report["models"]["chosen"]["val"]["loss"] == pytest.approx(loss, abs=1e-6)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--groups", "auto", "--budget", "-0.1"], "--budget must be a number >= 0"),
        (["--groups", "fc9"], "unknown layer or group 'fc9'"),
        (["--groups", "fc1", "--alpha", "fc9: 0.3"], "not a chosen group"),
        (["--groups", "fc1", "--weights", "0.5,0.4"], "--weights must sum to 1"),
        (["--budget-of", "c"], "--budget-of must be one of"),
    ],
)
def test_bad_values_get_one_line_and_exit_2(files, tmp_path, capsys, flags, words) -> None:
    out = tmp_path / "bad.pt"
    with pytest.raises(SystemExit) as exit_:
        main(["merge", "--ckpt-a", str(files[0]), "--ckpt-b", str(files[1]), *NET, *flags,
              "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and words in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("bad.pt.*"))


def test_one_network_is_refused_in_one_line(files, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["merge", "--ckpt", str(files[0]), *NET, "--out", str(tmp_path / "one.pt")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "single network" in err and len(err.splitlines()) == 1
    with pytest.raises(LwlcError, match="at least 2 networks"):
        from lwlc.core.soup import check_weights

        check_weights(None, 1)


def module(state: dict) -> MLP:
    net = MLP(width=WIDTH, depth=3)
    net.load_state_dict(state)
    return net


def test_select_layers_gives_the_cli_choice_and_merge_gives_its_model(files, tmp_path) -> None:
    out = tmp_path / "cli.pt"
    main(["merge", "--ckpt-a", str(files[0]), "--ckpt-b", str(files[1]), *NET,
          "--groups", "auto", "--budget", str(BUDGET), "--out", str(out)])  # fmt: skip
    report = json.loads(Path(f"{out}.selection.json").read_text())
    a, b = (torch.load(f, weights_only=True) for f in files[:2])
    import lwlc

    found = lwlc.select_layers(module(a), module(b), DigitsDataModule(), budget=BUDGET)
    assert found.groups == report["chosen"]
    assert len(found.table) == 16 and found.table.accepted.sum() == 1
    written = torch.load(out, weights_only=True)["state_dict"]
    merged = found.merge().state_dict()
    assert all(torch.equal(merged[k], written[f"net.{k}"]) for k in merged)
    assert found.plot(tmp_path / "sel.png").stat().st_size > 10_000


def test_merge_models_takes_per_group_alphas_and_k_models(files) -> None:
    import lwlc

    states = [torch.load(f, weights_only=True) for f in files]
    a, b, c = map(module, states)
    merged = lwlc.merge_models(a, b, ["fc2", "head"], alpha={"head": 0.9, "fc2": 0.2}).state_dict()
    for k, v in states[0].items():
        alpha = {"fc2": 0.2, "head": 0.9}.get(k.rpartition(".")[0])
        assert torch.equal(
            merged[k], v if alpha is None else (1 - alpha) * v + alpha * states[1][k]
        )
    soup = lwlc.merge_models(a, [b, c], ["fc1"], rest_from="b").state_dict()
    expected = weighted_soup(states, {"fc1"}, [1 / 3] * 3, rest=1)
    assert all(torch.allclose(soup[k], v, atol=1e-7, rtol=0) for k, v in expected.items())
    with pytest.raises(LwlcError, match="must sum to 1"):
        lwlc.merge_models(a, [b, c], ["fc1"], weights=[0.5, 0.5, 0.5])


def test_auto_selection_runs_after_weight_matching(files, tmp_path) -> None:
    """--align applies before the search: the numbers are those of B permuted onto A."""
    from lwlc.core.alignment import weight_matching

    out = tmp_path / "aligned.pt"
    main(["merge", "--ckpt-a", str(files[0]), "--ckpt-b", str(files[2]), *NET, "--groups", "auto",
          "--budget", "0.02", "--align", "weight-matching", "--out", str(out)])  # fmt: skip
    a, b = (torch.load(f, weights_only=True) for f in (files[0], files[2]))
    b = weight_matching(module(a), a, b)[0]
    report = json.loads(Path(f"{out}.selection.json").read_text())
    rest = "ab".index(report["rest_from"])
    for name, groups in (
        ("chosen", set(report["chosen"])),
        ("full_average", set(report["groups"])),
    ):
        state = weighted_soup([a, b], groups, [0.5, 0.5], rest)
        assert report["models"][name]["test"]["loss"] == pytest.approx(
            naive_loss(state, "test")[0], abs=1e-6
        )
    written = torch.load(out, weights_only=True)["state_dict"]
    expected = weighted_soup([a, b], set(report["chosen"]), [0.5, 0.5], rest)
    assert all(torch.equal(written[f"net.{k}"], v) for k, v in expected.items())


def test_k_model_report_gives_each_groups_soup_barrier_against_the_members_mean(
    files, tmp_path
) -> None:
    out = tmp_path / "k3.pt"
    main(["merge", "--ckpt", *map(str, files), *NET, "--groups", "auto", "--budget", "0",
          "--rest-from", "b", "--out", str(out)])  # fmt: skip
    states = [torch.load(f, weights_only=True) for f in files]
    report = json.loads(Path(f"{out}.selection.json").read_text())
    mean = sum(naive_loss(s, "test")[0] for s in states) / 3
    for group, members in (("fc2", {"fc2"}), ("all", {"fc1", "fc2", "fc3", "head"})):
        soup = weighted_soup(states, members, [1 / 3] * 3, rest=1)
        want = naive_loss(soup, "test")[0] - mean
        assert report["soup_barriers"][group]["test"] == pytest.approx(want, abs=1e-6)


def test_greedy_cli_choice_is_maximal_by_independent_evaluation(files, tmp_path) -> None:
    out = tmp_path / "greedy.pt"
    main(["merge", "--ckpt-a", str(files[0]), "--ckpt-b", str(files[1]), *NET, "--groups", "auto",
          "--budget", str(BUDGET), "--exhaustive-max", "2", "--out", str(out)])  # fmt: skip
    report = json.loads(Path(f"{out}.selection.json").read_text())
    a, b = (torch.load(f, weights_only=True) for f in files[:2])
    rest, chosen = "ab".index(report["rest_from"]), set(report["chosen"])
    assert report["search"] == "greedy"
    loss = naive_loss(weighted_soup([a, b], chosen, [0.5, 0.5], rest), "val")[0]
    assert loss <= report["limit"]
    for group in set(report["groups"]) - chosen:  # no remaining group fits on top
        bigger = weighted_soup([a, b], chosen | {group}, [0.5, 0.5], rest)
        assert naive_loss(bigger, "val")[0] > report["limit"]
