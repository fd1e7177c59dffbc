"""The benchmark scripts' pieces and their CPU modes (benchmarks/paper_gpu.py, bench_analyze.py).

The GPU runs themselves need a lent GPU; these check what they are built from: the derived
configs (the paper configs changed only where a short run must), the data fallback, the padded
Fashion-MNIST, the epoch clock's image count, the multiply-add count per token, and (slow) the
tiny end-to-end modes against the files they write.
"""

from __future__ import annotations

import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from fixtures_data import write_mnist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_analyze  # noqa: E402
import paper_gpu  # noqa: E402


def options(**kw: object) -> Namespace:
    base = dict(
        epochs=3, precision="", plans="full", splits="test", max_samples=None, cpu_check=False
    )
    return Namespace(**{**base, **kw})


def test_max_time_is_lightnings_day_hour_minute_second_string() -> None:
    assert paper_gpu.max_time(3725) == "00:01:02:05"
    assert paper_gpu.max_time(90061) == "01:01:01:01"
    assert paper_gpu.max_time(0.2) == "00:00:00:01"


def test_images_are_counted_for_a_single_batch_and_one_batch_per_member() -> None:
    x, y = torch.zeros(5, 3, 4, 4), torch.zeros(5)
    assert paper_gpu.count_images((x, y)) == 5
    assert paper_gpu.count_images([(x, y), (x[:3], y[:3])]) == 8
    assert paper_gpu.count_images({"a": (x, y), "b": (x, y)}) == 10


@pytest.mark.parametrize("name", ["resnet18", "vgg11"])
def test_derived_config_changes_only_the_short_runs_settings(name: str, tmp_path: Path) -> None:
    paper = yaml.safe_load(paper_gpu.CONFIGS[name].read_text())
    root = str(tmp_path / "fm")
    got = paper_gpu.derived_config(name, options(), ("fashion-mnist", root), tmp_path / "run", 125)
    for section in ("model", "optimizer", "lr_scheduler", "seed_everything"):
        assert got[section] == paper[section]
    assert got["trainer"]["max_epochs"] == paper["trainer"]["max_epochs"] == 200
    assert got["trainer"]["precision"] == paper["trainer"]["precision"]
    assert got["trainer"]["max_time"] == "00:00:02:05"
    clock, barrier = got["trainer"]["callbacks"]
    assert clock["class_path"] == "paper_gpu.EpochClock"
    assert clock["init_args"]["stop_after"] == 3
    paper_args = paper["trainer"]["callbacks"][0]["init_args"]
    want = {**paper_args, "spec": {**paper_args["spec"], "plans": ["full"], "splits": ["test"]}}
    assert barrier["init_args"] == want
    shared = paper["data"]["init_args"]
    assert got["data"] == {
        "class_path": "paper_gpu.FashionMNIST32",
        "init_args": {
            "root": root,
            **{k: shared[k] for k in ("batch_size", "eval_batch_size", "val_size", "num_workers")},
        },
    }
    cifar = paper_gpu.derived_config(name, options(), ("cifar10", "/x"), tmp_path / "r", 60)
    assert cifar["data"] == {**paper["data"], "init_args": {**shared, "root": "/x"}}


def test_single_layers_and_a_sample_budget_are_options_of_the_gpu_run(tmp_path: Path) -> None:
    args = options(plans="full,single", max_samples=512)
    got = paper_gpu.derived_config("resnet18", args, ("cifar10", "/x"), tmp_path / "r", 60)
    barrier = got["trainer"]["callbacks"][1]["init_args"]
    assert (barrier["spec"]["plans"], barrier["spec"]["max_samples"]) == (["full", "single"], 512)
    paper = yaml.safe_load(paper_gpu.CONFIGS["resnet18"].read_text())
    paper_spec = paper["trainer"]["callbacks"][0]["init_args"]["spec"]
    assert paper_spec["max_samples"] is None  # the whole split


def test_the_row_reports_the_worst_single_layer_per_epoch(tmp_path: Path) -> None:
    csv_file = tmp_path / "barriers.csv"
    lines = ["epoch,plan,group,rest_from,split,reference,loss_barrier"]
    lines += ["0,full,all,a,test,midpoint,0.0", "1,full,all,a,test,midpoint,1.5"]
    lines += ["1,single,conv1,a,test,midpoint,0.25", "1,single,fc,b,test,midpoint,0.75"]
    lines += ["1,single,fc,b,train,midpoint,9.0", "1,single,fc,b,test,models,8.0"]
    csv_file.write_text("\n".join(lines) + "\n")
    assert paper_gpu.full_barriers(csv_file) == {0: 0.0, 1: 1.5}
    assert paper_gpu.full_barriers(csv_file, "single") == {1: 0.75}


def test_data_falls_back_from_cifar_to_fashion_mnist_to_fabricated(tmp_path: Path) -> None:
    args = Namespace(data="auto", cifar_root=str(tmp_path / "c"), fmnist_root=str(tmp_path / "f"))
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert paper_gpu.find_data(args) == ("fashion-mnist", str(tmp_path / "f"))
    (tmp_path / "c" / "cifar-10-batches-py").mkdir(parents=True)
    assert paper_gpu.find_data(args) == ("cifar10", str(tmp_path / "c"))
    args.data = "fabricated"
    assert paper_gpu.find_data(args) == ("fabricated", "")
    args.data, args.cifar_root = "cifar10", str(tmp_path / "none")
    with pytest.raises(SystemExit, match="CIFAR-10 not found"):
        paper_gpu.find_data(args)


def test_fashion_mnist_is_padded_to_three_channels_of_32(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path, n_train=6, n_test=4)
    data = paper_gpu.FashionMNIST32(root=str(tmp_path), val_size=0)
    data.setup()
    x, _ = data.tensors("train")
    assert x.shape == (6, 3, 32, 32)
    mean, std = paper_gpu.FashionMNISTDataModule.mean[0], paper_gpu.FashionMNISTDataModule.std[0]
    raw = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32)) / 255.0
    want = (torch.nn.functional.pad(raw, (2, 2, 2, 2)) - mean) / std
    ids = ((x[:, 0, 2, 2] * std + mean) * 255).round()  # the fixture's first pixel is an id
    order = torch.argsort(ids)  # setup shuffles the training set
    for c in range(3):
        torch.testing.assert_close(x[order, c], want, atol=1e-5, rtol=0)


def test_linear_multiply_adds_count_every_token() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3))
    stages = [Namespace(module=m) for m in model]
    tokens = torch.zeros(2, 7, 4)  # 2 sequences of 7 tokens
    assert bench_analyze.macs_per_stage(model, stages, tokens) == [7 * 4 * 6, 7 * 6 * 3]
    conv = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1))
    images = torch.zeros(1, 3, 8, 8)
    assert bench_analyze.macs_per_stage(conv, [Namespace(module=conv[0])], images) == [
        8 * 8 * 5 * 3 * 9
    ]


def test_pythia_layout_gets_block_stages() -> None:
    from lwlc.core.stages import find_stages

    args = Namespace(width=24, vocab=64, seq_len=8)
    model = bench_analyze.build("pythia", args)
    lm = model.lm
    assert lm.config.num_hidden_layers == 12 and lm.config.num_attention_heads == 12
    assert (
        lm.config.intermediate_size == 4 * 24
        and lm.config.rope_parameters["partial_rotary_factor"] == 0.25
    )
    found = find_stages(model)
    assert len(found.pairs) == 12 + 3 and "12 blocks" in found.how


@pytest.mark.slow
def test_paper_gpu_cpu_check_writes_its_rows(tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "paper_gpu.py"),
        "--cpu-check",
        "--data",
        "fabricated",
    ]
    command += ["--models", "resnet18", "--out", str(tmp_path / "runs"), "--results", str(results)]
    subprocess.run(command, check=True, cwd=tmp_path, timeout=300)
    text = results.read_text()
    assert "FABRICATED" in text and "CPU check" in text
    row = next(line for line in text.splitlines() if line.startswith("| resnet18 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "2"  # epochs
    # the full model's barrier by epoch, then the worst single layer's ("-": not measured here)
    assert cells[-2].startswith("0: 0.00")  # shared initialisation: no barrier at epoch 0
    assert "-0.00" not in cells[-2]  # noise prints as 0.00
    assert cells[-1] == "-"
    epochs = yaml.safe_load((tmp_path / "runs" / "resnet18" / "epochs.json").read_text())
    assert [e["images"] for e in epochs] == [2 * 3 * 64, 2 * 3 * 64]  # 2 members, 3 batches of 64


@pytest.mark.slow
def test_bench_analyze_foreign_models_agree_with_both_baselines(tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_analyze.py"), "--threads", "1"]
    command += ["--models", "pythia", "--width", "24", "--vocab", "64", "--seq-len", "8"]
    command += ["--samples", "2", "--batch", "2", "--alphas", "3", "--results", str(results)]
    subprocess.run(command, check=True, cwd=tmp_path, timeout=600)  # exits non-zero on disagreement
    row = next(line for line in results.read_text().splitlines() if line.startswith("| GPT-NeoX"))
    assert "15 (hugging face decoder blocks (12 blocks))" in row


def test_a_skipped_baseline_reads_as_a_dash_not_nan() -> None:
    assert bench_analyze.shown(float("nan"), ".2f", "x") == "-"
    assert bench_analyze.shown(2.654, ".2f", "x") == "2.65x"
    assert bench_analyze.shown(135.4, ".0f", "%") == "135%"
