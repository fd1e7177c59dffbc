"""The fmnist scale of experiments 1-3 on fabricated Fashion-MNIST IDX files.

The recipes run as ``lwlc experiment NAME --fmnist`` runs them (the paper's MNIST network, the
real IDX loading code), shrunk by ``--fit`` overrides to one short epoch; the tests check that
the fabricated files, not the system's real ones, were read, and that the numbers reported
against each reference are the CSVs' values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fixtures_data import write_mnist
from lwlc.commands import experiment
from lwlc.commands.cli import main
from lwlc.core.errors import LwlcError
from lwlc.formats.io import read_csv

PAIRINGS = ("shared_init", "independent")
INIT = {"shared_init": "shared", "independent": "independent"}
N_TRAIN, N_TEST = 64, 20


def shrink(root: Path) -> list[str]:
    return [
        f"--data.init_args.root={root}",
        "--data.init_args.batch_size=16",
        "--trainer.max_epochs=1",
        "--lr_scheduler.init_args.warmup_steps=1",  # of the 4 steps (the real run: 100)
        "--trainer.accelerator=cpu",
        "--num_threads=1",
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fmnist_data")
    write_mnist(root, n_train=N_TRAIN, n_test=N_TEST, gz=True)
    return root


@pytest.mark.parametrize("name", ["full_vs_single", "through_training", "cumulative"])
def test_fmnist_scale_trains_the_paper_network_on_the_idx_files(
    data: Path, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "out"
    record = experiment.run_experiment(name, "fmnist", out, shrink(data))
    assert record["run"]["scale"] == "fmnist"
    for pairing in PAIRINGS:
        root = out / "mlp" / pairing
        state = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
        assert state["global_step"] == N_TRAIN // 16  # one epoch of the fabricated set
        widths = [v.shape for k, v in state["state_dict"].items() if k.endswith("weight")]
        # the paper's MNIST network: 784 -> 512 -> 512 -> 512 -> 10, for A and for B
        assert widths[:4] == [(512, 784), (512, 512), (512, 512), (10, 512)]
        assert state["lwlc_pairing"]["init"] == INIT[pairing]
        config = (root / "logs" / "version_0" / "config.yaml").read_text()
        assert "lwlc.data.FashionMNISTDataModule" in config
        assert str(record[f"mlp/{pairing}/pairing"]).endswith("different data order")
    folder = "analysis" if name == "full_vs_single" else "barriers"
    measured = out / "mlp" / "independent" / folder
    curves = read_csv(measured / "curves.csv")
    # through training as the authors' heatmaps (test and train), the others on the test split
    splits = {"test", "train"} if name == "through_training" else {"test"}
    assert curves and {r["split"] for r in curves} == splits
    if name == "full_vs_single":
        # the fabricated 20 test images were measured, not the real 10000
        assert json.loads((measured / "summary.json").read_text())["samples"] == {"test": N_TEST}
        check_references(out, record)


def check_references(out: Path, record: dict[str, object]) -> None:
    """Every reference's full and largest single-layer loss barrier are the CSV's values."""
    for pairing in PAIRINGS:
        barriers = read_csv(out / "mlp" / pairing / "analysis" / "barriers.csv")
        for reference in ("midpoint", "models", "path"):
            rows = [r for r in barriers if r["reference"] == reference]
            full = [float(r["loss_barrier"]) for r in rows if r["plan"] == "full"]
            single = [float(r["loss_barrier"]) for r in rows if r["plan"] == "single"]
            assert len(full) == 1 and len(single) == 8  # 4 layers, rest from A and from B
            prefix = f"mlp/{pairing}/{reference}/"
            assert record[prefix + "full_loss_barrier"] == full[0]
            assert record[prefix + "max_single_loss_barrier"] == max(single)


def test_fmnist_is_refused_by_recipes_without_it(tmp_path: Path) -> None:
    with pytest.raises(LwlcError, match="experiment 'deep_linear' has no fmnist scale"):
        experiment.run_experiment("deep_linear", "fmnist", tmp_path / "out")


def test_fmnist_flag_excludes_the_other_scales(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["experiment", "full_vs_single", "--fmnist", "--quick"])
    assert "--quick and --fmnist exclude each other" in capsys.readouterr().err
