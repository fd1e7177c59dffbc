"""The fmnist_resnet scale of experiments 1-3 (the paper's no-norm ResNet-18 on Fashion-MNIST,
three pairings, seeds) on fabricated IDX files, shrunk to one short epoch by ``--fit``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fixtures_data import write_mnist
from lwlc.commands import experiment
from lwlc.commands.cli import main
from lwlc.core.errors import LwlcError
from lwlc.formats.io import read_csv

N_TRAIN, N_TEST = 64, 20
PAIRINGS = {"shared_init": "whole", "half_data": "halves", "independent": "whole"}


def shrink(root: Path) -> list[str]:
    return [
        f"--data.init_args.root={root}",
        "--data.init_args.batch_size=16",
        "--trainer.max_epochs=1",
        "--lr_scheduler.init_args.warmup_steps=1",
        "--trainer.accelerator=cpu",
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fmnist_data")
    write_mnist(root, n_train=N_TRAIN, n_test=N_TEST, gz=True)
    return root


def check_pairs(out: Path, folder: str, seeds: list[int]) -> None:
    """Every pairing x seed trained the width-8 no-norm ResNet as its pairing says."""
    for pairing, data in PAIRINGS.items():
        for seed in seeds:
            root = out / "resnet18" / pairing / f"seed{seed}"
            state = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
            weights = state["state_dict"]
            assert weights["net_a.conv1.weight"].shape == (8, 1, 3, 3)  # width 8, one channel
            assert "net_a.conv1.bias" not in weights and "net_a.bn1.weight" not in weights
            p = state["lwlc_pairing"]
            assert (p["data"], p["init_seed_a"], p["order_seed_b"]) == (data, seed, seed + 1000)
            assert p["init"] == ("independent" if pairing == "independent" else "shared")
            # one epoch: 4 batches of 16 on the whole set, 2 on a half
            assert state["global_step"] == (2 if data == "halves" else 4)
            assert read_csv(root / folder / "barriers.csv")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["full_vs_single", "through_training", "cumulative"])
def test_fmnist_resnet_scale_trains_every_pairing_and_seed(
    data: Path, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "out"
    record = experiment.run_experiment(name, "fmnist_resnet", out, shrink(data), seeds=[0, 1])
    check_pairs(out, "analysis" if name == "full_vs_single" else "barriers", [0, 1])
    for pairing in PAIRINGS:
        assert record[f"resnet18/{pairing}/seeds"] == "0,1"
    if name == "cumulative":  # the 21 groups of the ResNet, in each order
        assert len(record["resnet18/half_data/seed1/front/order"].split(",")) == 21


def test_full_vs_single_at_fmnist_resnet_reports_each_seed_from_its_csv(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    record = experiment.run_experiment(
        "full_vs_single", "fmnist_resnet", out, shrink(data), seeds=[3]
    )
    check_pairs(out, "analysis", [3])
    barriers = read_csv(out / "resnet18" / "half_data" / "seed3" / "analysis" / "barriers.csv")
    rows = [r for r in barriers if r["reference"] == "midpoint"]
    singles = [float(r["loss_barrier"]) for r in rows if r["plan"] == "single"]
    assert len(singles) == 42  # 21 groups, rest from A and from B
    assert record["resnet18/half_data/seed3/midpoint/max_single_loss_barrier"] == max(singles)
    assert record["run"]["seeds"] == [3]


@pytest.mark.parametrize("seeds", ["0,x", "1,1", "-1"])
def test_bad_seeds_are_one_line_user_errors_before_anything_is_created(
    seeds: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["experiment", "full_vs_single", "--fmnist-resnet", "--seeds", seeds, "--out", str(out)]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--seeds" in err
    assert not out.exists()


def test_fmnist_resnet_flag_excludes_the_other_scales(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["experiment", "cumulative", "--fmnist-resnet", "--quick"])
    assert "--quick and --fmnist-resnet exclude each other" in capsys.readouterr().err


def test_fmnist_resnet_is_refused_by_recipes_without_it(tmp_path: Path) -> None:
    with pytest.raises(LwlcError, match="has no fmnist_resnet scale"):
        experiment.run_experiment("deep_linear", "fmnist_resnet", tmp_path / "out")
