"""``--bn reset`` is one fixed procedure (lwlc.core.calibration): the same statistics whatever the
evaluation batch size, chunk size or memory budget, in analyze, the Callback and merge, equal to
a naive per-model computation of the documented sample-weighted averages."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from torch import Tensor, nn

from engine_reference import naive_state
from lwlc.callbacks import LayerwiseBarrierCallback
from lwlc.commands.cli import main
from lwlc.core.calibration import recalibrated_state
from lwlc.core.errors import LwlcError
from lwlc.core.memory import GIB, TENSOR_SHARE, plan
from lwlc.core.spec import MeasureSpec
from lwlc.data import DigitsDataModule
from lwlc.formats.io import read_csv
from lwlc.models import ResNet18
from lwlc_runs import QUIET

BN_SAMPLES, BN_BATCH = 150, 64  # calibration batches of 64, 64 and 22 samples
EVAL_SAMPLES = 30
MODEL = ["--model", "lwlc.models.ResNet18", "--model.init_args.in_channels", "1",
         "--model.init_args.width", "4"]  # fmt: skip
DATA = ["--data", "lwlc.data.DigitsDataModule"]
SWEEP = ["--bn", "reset", "--bn-samples", str(BN_SAMPLES), "--plans", "full,single",
         "--group-depth", "1", "--rest-from", "a", "--alphas", "0,0.5,1", "--splits", "test",
         "--max-samples", str(EVAL_SAMPLES), "--no-plots"]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids contention on a shared machine (module fixtures too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _resnet() -> ResNet18:
    return ResNet18(num_classes=10, in_channels=1, width=4)


def naive_calibrated(model: nn.Module, state: dict, inputs: Tensor, batch_size: int) -> nn.Module:
    """``model`` with ``state`` and each BatchNorm's statistics computed by hand, in float64:
    running_mean = sum_k n_k mean_k / sum_k n_k, running_var the same with the unbiased batch
    variance, over batches of ``batch_size`` samples in order (BatchNorm normalising with batch
    statistics meanwhile, as in training)."""
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    sums = {id(m): [0.0, 0.0, 0] for m in norms}

    def record(m: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0].detach().double().transpose(0, 1).flatten(1)  # channels x values
        n = args[0].shape[0]
        acc = sums[id(m)]
        acc[0] = acc[0] + n * x.mean(1)
        acc[1] = acc[1] + n * x.var(1, unbiased=True)
        acc[2] += n

    handles = [m.register_forward_pre_hook(record) for m in norms]
    net.train()
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            net(inputs[start : start + batch_size])
    for h in handles:
        h.remove()
    batches = -(-len(inputs) // batch_size)
    for m in norms:
        mean_sum, var_sum, total = sums[id(m)]
        m.running_mean.copy_((mean_sum / total).float())
        m.running_var.copy_((var_sum / total).float())
        m.num_batches_tracked.fill_(batches)
    return net.eval()


def _loss(net: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(net(x), y).item()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """Two differently initialised BatchNorm ResNets (width 4) saved as plain state dicts."""
    root = tmp_path_factory.mktemp("bn_pair")
    torch.manual_seed(0)
    a = _resnet().state_dict()
    torch.manual_seed(1)
    b = _resnet().state_dict()
    torch.save(a, root / "a.pt")
    torch.save(b, root / "b.pt")
    return root, a, b


def _analyze(root: Path, out: Path, *args: str) -> list[dict]:
    main(["analyze", "--ckpt-a", str(root / "a.pt"), "--ckpt-b", str(root / "b.pt"),
          *MODEL, *DATA, *SWEEP, "--out", str(out), *args])  # fmt: skip
    return read_csv(out / "curves.csv")


@pytest.fixture(scope="module")
def reference(pair: tuple[Path, dict, dict], tmp_path_factory) -> dict[tuple, float]:
    """The naive loss of every (group, alpha) of the sweep, with groups read from an analysis."""
    root, a, b = pair
    out = tmp_path_factory.mktemp("layers") / "run"
    _analyze(root, out, "--bn-batch-size", str(BN_BATCH))
    layers = json.loads((out / "summary.json").read_text())["layers"]
    groups = {g["name"]: set(g["keys"]) for g in layers}
    groups["all"] = set(a)
    data = DigitsDataModule()
    calibration = data.tensors("train", BN_SAMPLES)[0]
    x, y = data.tensors("test", EVAL_SAMPLES)
    model = _resnet()
    return {
        (group, alpha): _loss(
            naive_calibrated(model, naive_state(a, b, keys, alpha, "a"), calibration, BN_BATCH),
            x,
            y,
        )
        for group, keys in groups.items()
        for alpha in (0.0, 0.5, 1.0)
    }


def _check(rows: list[dict], reference: dict[tuple, float]) -> None:
    got = {(r["group"], r["alpha"]): r["loss"] for r in rows}
    assert len(got) == len(rows) > 3
    for key, loss in got.items():
        assert loss == pytest.approx(reference[key], abs=1e-5), key


@pytest.mark.parametrize(
    ("batch_size", "chunk_size"), [("1", "1"), ("7", "2"), ("64", "16"), ("512", "3")]
)
def test_analyze_bn_reset_equals_the_naive_statistics_at_any_batch_and_chunk_size(
    pair, reference, tmp_path, batch_size, chunk_size
) -> None:
    rows = _analyze(pair[0], tmp_path / "run", "--bn-batch-size", str(BN_BATCH),
                    "--batch-size", batch_size, "--chunk-size", chunk_size)  # fmt: skip
    _check(rows, reference)


def test_a_memory_budget_shrinks_the_evaluation_batch_but_not_the_calibration(
    pair, reference, tmp_path, capsys
) -> None:
    """A budget that fits about 20 evaluation samples: the evaluation batch and the chunk shrink,
    the calibration batch (16, so the 150 samples come in 9 batches of 16 and one of 6) stays."""
    root = pair[0]
    first = tmp_path / "first"
    _analyze(root, first, "--bn-batch-size", "16", "--chunk-size", "1")
    mem = json.loads((first / "summary.json").read_text())["memory"]
    room = mem["fixed_bytes"] + mem["weights_bytes"] + 20 * mem["activation_bytes_per_sample"]
    budget = f"{room / TENSOR_SHARE / GIB:.9f}"
    out = tmp_path / "budget"
    rows = _analyze(root, out, "--bn-batch-size", "16", "--memory-budget", budget)
    chosen = json.loads((out / "summary.json").read_text())["memory"]
    assert 16 <= chosen["batch_size"] < EVAL_SAMPLES and chosen["chunk_size"] == 1
    assert chosen["bn_batch_size"] == 16
    assert "memory: batch size" in capsys.readouterr().err
    data = DigitsDataModule()
    calibration = data.tensors("train", BN_SAMPLES)[0]
    x, y = data.tensors("test", EVAL_SAMPLES)
    a, b = pair[1], pair[2]
    full = {r["alpha"]: r["loss"] for r in rows if r["group"] == "all"}
    for alpha, loss in full.items():
        net = naive_calibrated(_resnet(), naive_state(a, b, set(a), alpha, "a"), calibration, 16)
        assert loss == pytest.approx(_loss(net, x, y), abs=1e-5)

    # a calibration batch that cannot fit is one line naming --bn-batch-size, nothing written
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _analyze(root, tmp_path / "too_big", "--bn-batch-size", str(BN_SAMPLES),
                 "--memory-budget", budget)  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("lwlc: error:")]
    assert f"calibration batch of {BN_SAMPLES} samples" in line and "lower --bn-batch-size" in line
    assert not (tmp_path / "too_big").exists()


def test_merge_bn_reset_builds_the_model_analyze_measures(pair, reference, tmp_path) -> None:
    root, a, b = pair
    out = tmp_path / "merged.safetensors"
    main(["merge", "--ckpt-a", str(root / "a.pt"), "--ckpt-b", str(root / "b.pt"), *MODEL, *DATA,
          "--bn", "reset", "--bn-samples", str(BN_SAMPLES), "--bn-batch-size", str(BN_BATCH),
          "--alpha", "0.5", "--out", str(out)])  # fmt: skip
    net = _resnet()
    net.load_state_dict(load_file(str(out)))
    x, y = DigitsDataModule().tensors("test", EVAL_SAMPLES)
    assert _loss(net.eval(), x, y) == pytest.approx(reference[("all", 0.5)], abs=1e-5)
    calibration = DigitsDataModule().tensors("train", BN_SAMPLES)[0]
    naive = naive_calibrated(_resnet(), naive_state(a, b, set(a), 0.5, "a"), calibration, BN_BATCH)
    for key, value in naive.state_dict().items():
        assert torch.allclose(net.state_dict()[key], value, atol=1e-5, rtol=1e-5), key


def test_callback_bn_reset_equals_analyze_on_the_same_checkpoint(tmp_path) -> None:
    callback = {"class_path": "lwlc.callbacks.LayerwiseBarrierCallback", "init_args": {
        "every_n_epochs": None, "figures": False, "spec": {
            "plans": ["full"], "splits": ["val"], "alphas": [0, 0.5, 1], "bn": "reset",
            "bn_samples": BN_SAMPLES, "bn_batch_size": BN_BATCH, "batch_size": 7,
            "max_samples": EVAL_SAMPLES}}}  # fmt: skip
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "limit_train_batches": 2, "accelerator": "cpu",
                    "deterministic": True, "default_root_dir": str(tmp_path / "run"),
                    "callbacks": [callback]},  # fmt: skip
        "model": {"class_path": "lwlc.training.PairedModule", "init_args": {
            "model": {"class_path": "lwlc.models.ResNet18",
                      "init_args": {"in_channels": 1, "num_classes": 10, "width": 4}},
            "init_seed_a": 0, "init_seed_b": 1}},  # fmt: skip
        "data": {"class_path": "lwlc.data.DigitsDataModule", "init_args": {"batch_size": 32}},
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05}},
    }
    path = tmp_path / "bn.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path), *QUIET])
    out = tmp_path / "analysis"
    main(["analyze", "--ckpt", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--out",
          str(out), "--bn", "reset", "--bn-samples", str(BN_SAMPLES), "--bn-batch-size",
          str(BN_BATCH), "--plans", "full", "--rest-from", "a", "--splits", "val", "--alphas",
          "0,0.5,1", "--max-samples", str(EVAL_SAMPLES), "--batch-size", "64",
          "--no-plots"])  # fmt: skip
    theirs = {r["alpha"]: r["loss"] for r in read_csv(out / "curves.csv")}
    ours = {r["alpha"]: r["loss"] for r in read_csv(tmp_path / "run" / "barriers" / "curves.csv")}
    assert ours.keys() == theirs.keys() == {0.0, 0.5, 1.0}
    for alpha, loss in theirs.items():
        assert ours[alpha] == pytest.approx(loss, abs=1e-5), alpha


def test_recalibrated_state_weighs_a_smaller_last_batch_less() -> None:
    """Two batches of 3 and 1 samples of a BatchNorm1d over (N, C, L): the running mean is the
    mean of all 4 samples' batch means weighted 3:1, not the plain mean of the two."""
    model = nn.Sequential(nn.BatchNorm1d(2))
    x = torch.arange(4 * 2 * 5, dtype=torch.float32).reshape(4, 2, 5) ** 1.5
    state = recalibrated_state(model, model.state_dict(), x, 3)
    first, last = x[:3].transpose(0, 1).flatten(1), x[3:].transpose(0, 1).flatten(1)
    mean = (3 * first.mean(1) + last.mean(1)) / 4
    var = (3 * first.var(1) + last.var(1)) / 4
    assert torch.allclose(state["0.running_mean"], mean, rtol=1e-6)
    assert torch.allclose(state["0.running_var"], var, rtol=1e-6)
    assert int(state["0.num_batches_tracked"]) == 2
    assert model[0].momentum == 0.1 and model.training  # the model itself is left as it was


def test_a_single_sample_batch_without_variance_is_one_line() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with pytest.raises(LwlcError, match="single sample") as err:
        recalibrated_state(model, model.state_dict(), torch.randn(5, 3), 2)
    assert "\n" not in str(err.value)


def test_the_memory_plan_keeps_the_calibration_batch() -> None:
    """Budget 1000 bytes (700 for tensors), 100 fixed, 10 bytes of weights per path, 4 bytes of
    activations per sample: one path per chunk leaves 590 bytes, room for 147 samples."""
    weights = lambda k: 10 * k  # noqa: E731
    chosen = plan(1000, 200, 4, 100, 4, weights, calibration_batch=120)
    assert (chosen.batch_size, chosen.chunk_size, chosen.calibration_batch) == (147, 1, 120)
    with pytest.raises(LwlcError, match="lower --bn-batch-size to at most 147"):
        plan(1000, 100, 4, 100, 4, weights, calibration_batch=150)


@pytest.mark.parametrize("flag", ["--bn-batch-size", "--bn-samples"])
def test_bad_calibration_sizes_are_one_line(pair, tmp_path, capsys, flag) -> None:
    root = pair[0]
    for command in (
        ["analyze", "--ckpt-a", str(root / "a.pt"), "--ckpt-b", str(root / "b.pt"), *MODEL,
         *DATA, "--out", str(tmp_path / "out")],
        ["merge", "--ckpt-a", str(root / "a.pt"), "--ckpt-b", str(root / "b.pt"), *MODEL,
         *DATA, "--bn", "reset", "--out", str(tmp_path / "m.ckpt")],
    ):  # fmt: skip
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main([*command, flag, "0"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err
        assert f"lwlc: error: {flag} must be a whole number >= 1, got 0" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.ckpt").exists()
    field = flag[2:].replace("-", "_")  # the same message as analyze's, naming the field
    with pytest.raises(LwlcError, match=f"{field} must be a whole number >= 1, got 0"):
        LayerwiseBarrierCallback(MeasureSpec(**{field: 0}))


def test_resume_refuses_results_made_with_another_bn_batch_size(pair, tmp_path, capsys) -> None:
    root, out = pair[0], tmp_path / "run"
    _analyze(root, out, "--bn-batch-size", str(BN_BATCH))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _analyze(root, out, "--bn-batch-size", "32", "--resume")
    assert exit_info.value.code == 2
    assert "were made with different bn_batch_size" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    _analyze(root, out, "--bn-batch-size", str(BN_BATCH), "--resume")  # the same: accepted
    assert (out / "curves.csv").read_bytes() == before["curves.csv"]
