"""The CUDA path, run on a machine with a GPU: ``make test-gpu`` (``pytest -m gpu``).

``make test`` deselects these (CI has no GPU). Each test compares the GPU's numbers with the
same computation done independently on the CPU.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from engine_reference import naive_curve
from lwlc.commands.cli import main
from lwlc.core.engine import Evaluator
from lwlc.core.interpolation import default_alphas, make_paths
from lwlc.core.layers import default_groups
from lwlc.core.sweep import sweep
from lwlc.models import ResNet18
from lwlc_runs import fit_pair

pytestmark = pytest.mark.gpu

ALPHAS = [0.0, 0.3, 0.5, 1.0]


@pytest.fixture(scope="module")
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.fail(
            "the gpu tests need CUDA: run them with `make test-gpu` on a machine with a GPU"
        )
    return torch.device("cuda")


def _resnet_pair() -> tuple[ResNet18, dict, dict, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = ResNet18(width=8, num_classes=10)
    a = model.state_dict()
    torch.manual_seed(1)
    b = ResNet18(width=8, num_classes=10).state_dict()
    g = torch.Generator().manual_seed(2)
    for sd in (a, b):  # distinct, realistic BatchNorm statistics
        for k, v in sd.items():
            if k.endswith("running_mean"):
                sd[k] = 0.1 * torch.randn(v.shape, generator=g)
            elif k.endswith("running_var"):
                sd[k] = 0.5 + torch.rand(v.shape, generator=g)
    x = torch.randn(96, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)
    return model, a, b, x, y


@pytest.mark.parametrize("bn", ["keep", "reset"])
def test_engine_on_cuda_equals_the_naive_cpu_loop(cuda: torch.device, bn: str) -> None:
    model, a, b, x, y = _resnet_pair()
    groups = default_groups(model, x[:2])
    paths = make_paths(groups, ["full", "single", "cumulative_front"])[::5]
    calibration = x[:64] if bn == "reset" else None
    res = sweep(Evaluator(model, a, b, device=cuda, bn=bn, bn_batch_size=32), paths, ALPHAS,
                {"test": (x, y)},
                calibration=calibration, batch_size=32, chunk_size=len(paths))  # fmt: skip
    for p in paths:
        losses, accs = naive_curve(
            model, a, b, set(p.keys), ALPHAS, p.rest_from, x, y, calibration, 32
        )
        rows = [
            r
            for r in res.curves
            if (r["plan"], r["group"], r["rest_from"]) == (p.plan, p.group, p.rest_from)
        ]
        assert [r["loss"] for r in rows] == pytest.approx(losses, abs=1e-5)
        assert [r["accuracy"] for r in rows] == pytest.approx(accs, abs=1e-6)


def test_fast_modes_on_cuda_deviate_a_little_and_fp32_is_deterministic(cuda: torch.device) -> None:
    model, a, b, x, y = _resnet_pair()
    paths = make_paths(default_groups(model, x[:2]), ["full", "single"])[::4]
    alphas = default_alphas(5)

    def losses(precision: str) -> list[float]:
        ev = Evaluator(model, a, b, device=cuda, precision=precision)
        res = sweep(ev, paths, alphas, {"test": (x, y)}, batch_size=48, chunk_size=len(paths))
        return [r["loss"] for r in res.curves]

    exact = losses("fp32")
    assert losses("fp32") == exact
    for precision, bound in (("tf32", 1e-2), ("bf16", 5e-2)):
        deviation = max(abs(u - v) for u, v in zip(losses(precision), exact, strict=False))
        assert 0 < deviation < bound, (precision, deviation)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_fit_on_gpu_then_analyze_on_cuda_equals_analyze_on_cpu(
    cuda: torch.device, tmp_path: Path
) -> None:
    """``lwlc fit`` on the GPU in bf16-mixed with the Callback, then ``lwlc analyze`` both ways."""
    gpu = ["--trainer.accelerator", "gpu", "--trainer.precision", "bf16-mixed"]
    ckpt = fit_pair(tmp_path / "run", *gpu, batches=20)
    assert _rows(tmp_path / "run" / "barriers" / "barriers.csv")  # the Callback ran on the GPU
    out = {}
    for device in ("cuda", "cpu"):
        main(["analyze", "--ckpt", str(ckpt), "--device", device, "--plans", "full,single",
              "--out", str(tmp_path / device)])  # fmt: skip
        out[device] = _rows(tmp_path / device / "curves.csv")
    assert len(out["cuda"]) == len(out["cpu"]) > 0
    for g, c in zip(out["cuda"], out["cpu"], strict=False):
        assert (g["plan"], g["group"], g["alpha"]) == (c["plan"], c["group"], c["alpha"])
        assert float(g["loss"]) == pytest.approx(float(c["loss"]), abs=1e-5)
