"""Experiments 1-4 (full vs single, through training, cumulative, deep linear) and the runner.

Each recipe runs at scale ``smoke`` once per module (a module fixture) and the tests check its
science against values recomputed here from the files it wrote.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torchvision.datasets import cifar

from fixtures_data import write_cifar10
from lwlc import recipes
from lwlc.commands import experiment
from lwlc.commands.cli import main
from lwlc.formats.io import read_csv

PAIRINGS = ("shared_init", "independent")


def midpoint_excess(curve: list[dict[str, object]], start: float, end: float) -> float:
    """f(0.5) - (start + end) / 2, found on the curve by hand."""
    middle = [float(r["loss"]) for r in curve if float(r["alpha"]) == 0.5]
    assert len(middle) == 1
    return middle[0] - 0.5 * (start + end)


def run_smoke(name: str, out: Path) -> dict[str, object]:
    record = experiment.run_experiment(name, "smoke", out)
    assert json.loads((out / "result.json").read_text())["run"]["experiment"] == name
    return record


# ------------------------------------------------------------------------------ the runner


def write_recipe(root: Path, name: str, body: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "recipe.py").write_text(body)


FAKE = """
from lwlc import recipes

CLAIM = "two plus two is four"

def run(out, scale):
    (out / "seen.txt").write_text(scale)
    return {"sum": 2.0 + 2.0, "scale": scale, "fit": " ".join(recipes.FIT_OVERRIDES.get())}
"""


@pytest.fixture
def fake_experiments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "recipes"
    write_recipe(root, "arith", FAKE)
    write_recipe(root, "broken", "CLAIM = 'no run function'\n")
    (root / "not_a_recipe").mkdir()
    monkeypatch.setenv(experiment.ENV_DIR, str(root))
    return root


def test_list_shows_every_recipe_folder_with_its_claim(
    fake_experiments: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert experiment.recipe_names() == ["arith", "broken"]
    with pytest.raises(Exception, match="does not define run"):
        main(["experiment", "--list", "--debug"])
    (fake_experiments / "broken" / "recipe.py").unlink()
    capsys.readouterr()
    main(["experiment", "--list"])
    assert capsys.readouterr().out.strip() == "arith: two plus two is four"


def test_the_repository_holds_the_four_recipes_of_part_a() -> None:
    names = experiment.recipe_names()
    for name in ("full_vs_single", "through_training", "cumulative", "deep_linear"):
        assert name in names
        recipe = experiment.load_recipe(name)
        assert isinstance(recipe.CLAIM, str) and len(recipe.CLAIM) > 40


def test_run_saves_headline_claim_scale_machine_and_time(
    fake_experiments: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    main(["experiment", "arith", "--smoke", "--out", str(out)])
    record = json.loads((out / "result.json").read_text())
    assert record["sum"] == 4.0 and record["scale"] == "smoke"
    assert (out / "seen.txt").read_text() == "smoke"
    run = record["run"]
    assert run["experiment"] == "arith" and run["scale"] == "smoke"
    assert run["claim"] == "two plus two is four"
    assert run["wall_time_s"] >= 0 and run["machine"]["cpu_cores"] >= 1
    # the CPU model, as /proc/cpuinfo names it (reruns on other machines are told apart by it)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        name = next(x for x in cpuinfo.read_text().splitlines() if x.startswith("model name"))
        assert run["machine"]["cpu_model"] == name.split(":", 1)[1].strip()
    assert run["machine"]["torch"] == torch.__version__
    printed = capsys.readouterr().out
    assert "sum: 4.0000" in printed and str(out / "result.json") in printed


def test_fit_overrides_reach_the_recipe_only_while_it_runs(
    fake_experiments: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    main(["experiment", "arith", "--smoke", "--out", str(out), "--fit=--a=1", "--fit=--b=2"])
    record = json.loads((out / "result.json").read_text())
    assert record["fit"] == "--a=1 --b=2"
    assert record["run"]["fit_overrides"] == ["--a=1", "--b=2"]
    assert recipes.FIT_OVERRIDES.get() == ()


def test_default_scale_is_full_and_out_is_named_after_experiment_and_scale(
    fake_experiments: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["experiment", "arith"])
    main(["experiment", "arith", "--quick"])
    assert (tmp_path / "runs/experiments/arith-full/seen.txt").read_text() == "full"
    assert (tmp_path / "runs/experiments/arith-quick/seen.txt").read_text() == "quick"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "unknown experiment 'nosuch'; available: arith, broken"),
        ([], "name an experiment"),
        (["arith", "--quick", "--smoke"], "--quick and --smoke exclude each other"),
        (["arith", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_user_mistakes_are_one_error_line(
    fake_experiments: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lwlc: error: ") and message in err and "\n" not in err


def test_an_earlier_run_is_replaced_only_with_overwrite(
    fake_experiments: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    main(["experiment", "arith", "--smoke", "--out", str(out)])
    (out / "old.txt").write_text("from the first run")
    with pytest.raises(SystemExit):
        main(["experiment", "arith", "--smoke", "--out", str(out)])
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "old.txt").exists()
    main(["experiment", "arith", "--smoke", "--out", str(out), "--overwrite"])
    assert not (out / "old.txt").exists() and (out / "result.json").exists()


def test_overwrite_never_deletes_a_folder_it_did_not_create(
    fake_experiments: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        main(["experiment", "arith", "--smoke", "--out", str(out), "--overwrite"])
    assert "not an lwlc experiment folder" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"


def test_an_unknown_scale_is_refused() -> None:
    with pytest.raises(experiment.LwlcError, match="unknown scale 'huge'"):
        experiment.run_experiment("deep_linear", "huge", Path("unused"))


def test_pair_setups_say_how_each_pair_is_made() -> None:
    quick = recipes.pair_setups("quick")
    assert [(s.network, s.pairing) for s in quick] == [("mlp", p) for p in PAIRINGS]
    assert quick[0].overrides == ("--model.init_args.init_seed_b=0",)
    assert quick[1].overrides == ("--model.init_args.init_seed_b=1",)
    full = recipes.pair_setups("full", ["shared_init"])
    assert [s.configs for s in full] == [
        ("configs/cifar10_vgg.yaml",),
        ("configs/cifar10_resnet18.yaml",),
    ]
    for setup in full:
        assert all((recipes.repo_root() / c).is_file() for c in setup.configs)


# ------------------------------------------------------------------ 1. full vs single


@pytest.fixture(scope="module")
def full_vs_single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("full_vs_single")
    return out, run_smoke("full_vs_single", out)


def test_full_vs_single_trains_both_pairings_as_labelled(
    full_vs_single: tuple[Path, dict[str, object]],
) -> None:
    out, record = full_vs_single
    expected_init = {"shared_init": "shared", "independent": "independent"}
    for pairing in PAIRINGS:
        ckpt = torch.load(out / "mlp" / pairing / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["lwlc_pairing"]["init"] == expected_init[pairing]
        assert ckpt["lwlc_pairing"]["order"] == "different"
        assert "initialisation" in str(record[f"mlp/{pairing}/pairing"])
        for figure in ("barriers", "curves"):
            assert (out / "figures" / f"mlp_{pairing}_{figure}.png").stat().st_size > 0


def test_full_vs_single_headline_matches_the_curves(
    full_vs_single: tuple[Path, dict[str, object]],
) -> None:
    out, record = full_vs_single
    for pairing in PAIRINGS:
        curves = read_csv(out / "mlp" / pairing / "analysis" / "curves.csv")
        full = [r for r in curves if r["plan"] == "full"]
        ends = (float(full[0]["loss"]), float(full[-1]["loss"]))
        prefix = f"mlp/{pairing}/midpoint/"
        assert record[prefix + "full_loss_barrier"] == pytest.approx(midpoint_excess(full, *ends))
        singles = {(r["group"], r["rest_from"]) for r in curves if r["plan"] == "single"}
        assert {g for g, _ in singles} == {"fc1", "fc2", "fc3", "head"}
        by_hand = max(
            midpoint_excess([r for r in curves if (r["group"], r["rest_from"]) == key], *ends)
            for key in singles
        )
        assert record[prefix + "max_single_loss_barrier"] == pytest.approx(by_hand)
        assert record[f"mlp/{pairing}/acc_a"] == float(full[0]["accuracy"])


# -------------------------------------------------------------- 2. through training


@pytest.fixture(scope="module")
def through_training(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("through_training")
    return out, run_smoke("through_training", out)


def test_through_training_measures_the_scheduled_epochs_with_heatmaps(
    through_training: tuple[Path, dict[str, object]],
) -> None:
    out, record = through_training
    for pairing in PAIRINGS:
        rows = read_csv(out / "mlp" / pairing / "barriers" / "barriers.csv")
        assert sorted({int(r["epoch"]) for r in rows}) == [0, 1]
        assert record[f"mlp/{pairing}/epochs"] == "0,1"
        assert {(r["split"], r["rest_from"]) for r in rows if r["plan"] == "single"} == {
            ("test", "a"),
            ("test", "b"),
            ("train", "a"),
            ("train", "b"),
        }  # as the authors' heatmaps
        for split in ("test", "train"):
            for rest in ("", "_rest_b"):
                for metric in ("loss", "error"):
                    name = f"mlp_{pairing}_heatmap_{split}_single{rest}_{metric}.png"
                    assert (out / "figures" / name).stat().st_size > 0
        last = [
            r
            for r in rows
            if r["epoch"] == 1.0 and r["reference"] == "midpoint" and r["split"] == "test"
        ]
        full = [r for r in last if r["plan"] == "full"]
        assert record[f"mlp/{pairing}/last/full_loss_barrier"] == full[0]["loss_barrier"]


def test_a_shared_initialisation_has_no_barrier_before_training(
    through_training: tuple[Path, dict[str, object]],
) -> None:
    out, _ = through_training
    shared = read_csv(out / "mlp" / "shared_init" / "barriers" / "curves.csv")
    independent = read_csv(out / "mlp" / "independent" / "barriers" / "curves.csv")
    for split in ("test", "train"):
        at_init = [r for r in shared if r["epoch"] == 0.0 and r["split"] == split]
        assert at_init and len({r["loss"] for r in at_init}) == 1  # A == B: every model is A
        full = [
            r["loss"]
            for r in independent
            if r["epoch"] == 0.0 and r["plan"] == "full" and r["split"] == split
        ]
        assert len(set(full)) == len(full) > 1  # different networks: the loss moves along the path


# ------------------------------------------------------------------------ 3. cumulative


@pytest.fixture(scope="module")
def cumulative(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("cumulative")
    return out, run_smoke("cumulative", out)


def test_custom_orders_are_permutations_with_the_outer_layers_first() -> None:
    recipe = experiment.load_recipe("cumulative")
    layers = [f"l{i}" for i in range(1, 8)]
    shuffled = recipe.random_order(layers)
    assert sorted(shuffled) == sorted(layers) and shuffled == recipe.random_order(layers)
    assert shuffled != layers
    assert recipe.outer_first_order(layers) == ["l1", "l2", "l6", "l7", "l3", "l4", "l5"]
    deep = [f"l{i}" for i in range(1, 22)]
    assert recipe.outer_first_order(deep)[:10] == deep[:5] + deep[-5:]
    specs = recipe.custom_sets({"o": ["b", "a", "c"]})
    assert specs == ["o_1=b", "o_2=b,a", "o_3=b,a,c"]


def test_averaging_every_layer_in_any_order_is_the_full_model(
    cumulative: tuple[Path, dict[str, object]],
) -> None:
    _, record = cumulative
    for pairing in PAIRINGS:
        prefix = f"mlp/{pairing}/"
        full = float(record[prefix + "full_loss_barrier"])  # type: ignore[arg-type]
        for order in ("front", "back", "random", "outer_first"):
            names = str(record[f"{prefix}{order}/order"]).split(",")
            assert sorted(names) == sorted(["fc1", "fc2", "fc3", "fc4", "fc5", "fc6", "head"])
            values = [float(v) for v in str(record[f"{prefix}{order}/loss_barriers"]).split(",")]
            assert values[-1] == pytest.approx(full, abs=1e-3)  # printed with 3 decimals


def test_cumulative_front_of_one_layer_is_that_single_layer(
    cumulative: tuple[Path, dict[str, object]],
) -> None:
    out, record = cumulative
    curves = read_csv(out / "mlp" / "independent" / "barriers" / "curves.csv")
    last = max(float(r["epoch"]) for r in curves)
    final = [r for r in curves if r["epoch"] == last]
    front = [r for r in final if r["plan"] == "cumulative_front" and r["group"] == "fc1"]
    full = [r for r in final if r["plan"] == "full"]
    ends = (float(full[0]["loss"]), float(full[-1]["loss"]))
    first = str(record["mlp/independent/front/loss_barriers"]).split(",")[0]
    assert float(first) == pytest.approx(midpoint_excess(front, *ends), abs=1e-3)
    figures = out / "figures"
    assert (figures / "mlp_independent_orders.png").stat().st_size > 0
    assert (figures / "mlp_independent_heatmap_test_cumulative_back_loss.png").stat().st_size > 0


def test_onset_is_the_first_layer_past_half_the_full_barrier() -> None:
    recipe = experiment.load_recipe("cumulative")
    profile = [("a", 0.1), ("b", 0.4), ("c", 0.9), ("d", 1.0)]
    assert recipe.onset(profile, 1.0) == "c"
    assert recipe.onset(profile, -0.2) == "none"


# ----------------------------------------------------------------------- 4. deep linear


@pytest.fixture(scope="module")
def deep_linear(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("deep_linear")
    return out, run_smoke("deep_linear", out)


def test_second_differences_detect_convexity() -> None:
    recipe = experiment.load_recipe("deep_linear")
    assert recipe.second_differences([0.0, 1.0, 4.0, 9.0]) == [2.0, 2.0]
    assert recipe.second_differences([0.0, 1.0, 0.0]) == [-2.0]


def test_deep_linear_single_layer_curves_are_convex_and_full_has_a_barrier(
    deep_linear: tuple[Path, dict[str, object]],
) -> None:
    out, record = deep_linear
    for pair in ("sign_symmetry", "independent"):
        assert record[f"{pair}/single_curves_convex"] == "yes"
        rows = read_csv(out / pair / "curves.csv")
        paths = {(r["plan"], r["group"], r["rest_from"]) for r in rows}
        assert len(paths) == 1 + 3 * 2  # full, and W1..W3 with rest from A and from B
        for key in paths:
            f = [float(r["loss"]) for r in rows if (r["plan"], r["group"], r["rest_from"]) == key]
            second = [f[i - 1] - 2 * f[i] + f[i + 1] for i in range(1, len(f) - 1)]
            if key[0] == "single":
                assert min(second) >= -1e-5 * max(1.0, max(f))
                # a quadratic in alpha: third differences vanish
                third = [second[i + 1] - second[i] for i in range(len(second) - 1)]
                assert max(abs(t) for t in third) <= 1e-4 * max(1.0, max(f))
            else:
                assert min(second) < 0
    sign = record["sign_symmetry/full_path_barrier"]
    assert isinstance(sign, float) and sign > 0.5 * float(record["target_energy"])  # type: ignore[arg-type]
    assert (out / "figures" / "sign_symmetry_curves.png").stat().st_size > 0


def test_sign_symmetric_pair_is_one_function_whose_full_midpoint_outputs_zero(
    deep_linear: tuple[Path, dict[str, object]],
) -> None:
    out, record = deep_linear
    assert record["sign_symmetry/loss_a"] == record["sign_symmetry/loss_b"]
    rows = read_csv(out / "sign_symmetry" / "curves.csv")
    middle = [r for r in rows if r["plan"] == "full" and r["alpha"] == 0.5]
    assert middle[0]["loss"] == pytest.approx(record["target_energy"], rel=1e-6)


def test_deep_linear_curves_match_a_hand_written_matrix_product() -> None:
    recipe = experiment.load_recipe("deep_linear")
    setup = recipe.SETUPS["smoke"]
    net = recipe.deep_linear(setup.widths)
    x, y = recipe.regression_data(setup.widths, setup.samples)
    with recipes.torch_threads(1):
        a = recipe.train(net, x, y, 20, seed=0)
        b = recipe.train(net, x, y, 20, seed=1)
    paths = recipe.make_paths(recipe.default_groups(net), ["full", "single"], ["b"])
    rows = recipe.curves(net, a, b, paths, [0.0, 0.3, 1.0], (x, y))
    names = [f"W{i}.weight" for i in range(1, len(setup.widths))]
    for row in rows:
        alpha = float(row["alpha"])
        chosen = names if row["plan"] == "full" else [f"{row['group']}.weight"]
        out = x
        for name in names:
            w = (1 - alpha) * a[name] + alpha * b[name] if name in chosen else b[name]
            out = out @ w.T
        expected = ((out - y) ** 2).sum(dim=1).mean().item()
        assert float(row["loss"]) == pytest.approx(expected, rel=1e-5)
        assert math.isnan(float(row["accuracy"]))


# ------------------------------------------------------- the paper-scale (full) variants


@pytest.mark.slow
@pytest.mark.parametrize("name", ["full_vs_single", "through_training", "cumulative"])
def test_full_variants_run_on_a_tiny_fake_cifar10(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The full recipes (VGG-11 and ResNet-18 configs) end to end, shrunk by --fit overrides."""
    write_cifar10(tmp_path / "data")
    # fabricated files cannot match torchvision's md5 sums
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    shrink = [
        f"--data.init_args.root={tmp_path / 'data'}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=8",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32-true",
        "--model.init_args.model.init_args.width=8",
        "--num_threads=1",
    ]
    record = experiment.run_experiment(name, "full", tmp_path / "out", shrink)
    assert record["run"]["fit_overrides"] == shrink
    for network in ("vgg11", "resnet18"):
        for pairing in PAIRINGS:
            ckpt = tmp_path / "out" / network / pairing / "checkpoints" / "last.ckpt"
            state = torch.load(ckpt, weights_only=True)
            assert state["global_step"] == 5  # one epoch: 36 training images, batches of 8
            assert f"{network}/{pairing}/pairing" in record


def test_recipes_import_the_public_toolkit_never_the_command() -> None:
    """Recipes import ``lwlc.recipes``; importing ``lwlc.commands`` back would close an import
    loop through importlib (the command loads the recipes)."""
    found = sorted((recipes.repo_root() / "experiments").glob("*/recipe.py"))
    assert len(found) == 9  # the paper's eight and experiment 9, selection
    for path in found:
        text = path.read_text()
        assert "lwlc.commands" not in text, path
    imports = (found[0].parent.parent / "full_vs_single" / "recipe.py").read_text()
    assert re.search(r"^from lwlc import .*\brecipes\b", imports, re.MULTILINE)
