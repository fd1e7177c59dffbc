"""Networks without ``stages()`` (torchvision, torch.ops, a Sequential): the engine derives their
stages (``lwlc.core.stages``) and its sweep still equals the naive load_state_dict loop."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import MLP

from engine_reference import naive_curve
from lwlc.core.engine import Evaluator
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import make_paths
from lwlc.core.layers import default_groups
from lwlc.core.stages import find_stages
from lwlc.core.sweep import sweep
from lwlc.formats.inputs import check_fits


def _pair(make):
    """Two independently initialised networks; BatchNorm statistics made non-trivial."""
    torch.manual_seed(0)
    net = make()
    a = net.state_dict()
    torch.manual_seed(1)
    b = make().state_dict()
    g = torch.Generator().manual_seed(10)
    for sd in (a, b):
        for k in sd:
            if k.endswith("running_mean"):
                sd[k] = torch.randn(sd[k].shape, generator=g) * 0.3
            elif k.endswith("running_var"):
                sd[k] = torch.rand(sd[k].shape, generator=g) + 0.5
    return net.eval(), a, b


def _check(make, shape, bn, n=6, plans=("full", "single"), classes=10):
    """The engine's sweep against the naive loop; returns the number of stages it used."""
    model, a, b = _pair(make)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn((n, *shape), generator=g), torch.randint(0, classes, (n,), generator=g)
    calib = torch.randn((8, *shape), generator=g) if bn == "reset" else None
    paths = make_paths(default_groups(model, x[:2]), list(plans), rest_from=["a"])
    alphas = [0.0, 0.5, 1.0]
    ev = Evaluator(model, a, b, bn=bn, bn_batch_size=4)
    res = sweep(ev, paths, alphas, {"test": (x, y)}, calibration=calib, batch_size=4)
    for p in paths:
        rows = [r for r in res.curves if (r["plan"], r["group"]) == (p.plan, p.group)]
        losses, accs = naive_curve(model, a, b, set(p.keys), alphas, "a", x, y, calib, 4)
        for r, loss, acc in zip(rows, losses, accs, strict=True):
            assert r["loss"] == pytest.approx(loss, abs=1e-5), (p.group, r["alpha"])
            assert r["accuracy"] == pytest.approx(acc, abs=1e-6), (p.group, r["alpha"])
    assert any(st.mixable for st in ev.stages)  # lone Linear/Conv stages are mixed
    return len(ev.stages)


@pytest.mark.parametrize(
    "bn", ["keep", pytest.param("reset", marks=pytest.mark.slow)]
)  # reset's recalibration per model is the slow half; BatchNorm reset keeps a fast case elsewhere
def test_resnet18_fx_stages_match_naive_loop(bn):
    n = _check(lambda: torchvision.models.resnet18(num_classes=10), (3, 16, 16), bn, n=4)
    assert n > 1
    assert find_stages(torchvision.models.resnet18()).how.startswith("fx graph")


def test_torchvision_mlp_and_sequential_use_their_children():
    mlp = lambda: MLP(12, [16, 16, 5])  # noqa: E731
    assert _check(mlp, (12,), "keep", classes=5) == len(list(mlp().children())) > 1
    seq = lambda: nn.Sequential(  # noqa: E731
        nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 4)
    )
    assert _check(seq, (4, 4), "reset", classes=4) == 5
    assert find_stages(seq()).how == "sequential children"


@pytest.mark.slow
@pytest.mark.parametrize("bn", ["keep", "reset"])
def test_mobilenet_v2_fx_stages_match_naive_loop(bn):
    assert _check(lambda: torchvision.models.mobilenet_v2(num_classes=10), (3, 32, 32), bn) > 1


@pytest.mark.slow
def test_vgg11_fx_stages_match_naive_loop():
    assert _check(lambda: torchvision.models.vgg11(num_classes=10), (3, 32, 32), "keep", n=2) > 1


def test_untraceable_model_is_one_stage_and_says_why():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    found = find_stages(Branchy())
    assert len(found.pairs) == 1 and found.how.startswith("one stage: fx could not trace")


def test_foreign_model_that_does_not_fit_the_data_names_both_shapes():
    with pytest.raises(LwlcError, match=r"conv1 Conv2d \(takes 3 channels\).*\(1, 8, 8\)"):
        check_fits(torchvision.models.resnet18(num_classes=10), torch.randn(2, 1, 8, 8), "Digits")
