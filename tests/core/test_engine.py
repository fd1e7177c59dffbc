"""The connectivity engine (layers, interpolation, evaluation, sweep) against a naive loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine_reference import naive_curve, naive_eval, naive_state
from lwlc.core.engine import Evaluator, model_stages
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import default_alphas, make_paths, mix
from lwlc.core.layers import default_groups, group_by_depth, regroup
from lwlc.core.sweep import sweep


class StagedCNN(nn.Module):
    """A conv net with BatchNorm, a residual block and staged forward, like lwlc's models."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.block = Block(6)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(24, 4)

    def stages(self):
        return [
            (n, getattr(self, n))
            for n in ("conv1", "bn1", "relu", "block", "pool", "flatten", "fc")
        ]

    def forward(self, x):
        for _, m in self.stages():
            x = m(x)
        return x


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class PlainMLP(nn.Module):
    """No ``stages()``: the engine derives them (``lwlc.core.stages``)."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(16, 12)
        self.l2 = nn.Linear(12, 4)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x.flatten(1))))


def _pair(make, seed_a=0, seed_b=1, bn_noise=True):
    torch.manual_seed(seed_a)
    net_a = make()
    torch.manual_seed(seed_b)
    net_b = make()
    a, b = net_a.state_dict(), net_b.state_dict()
    if bn_noise:  # non-trivial running statistics, different per model
        g = torch.Generator().manual_seed(seed_a + 10)
        for sd in (a, b):
            for k in sd:
                if k.endswith("running_mean"):
                    sd[k] = torch.randn(sd[k].shape, generator=g) * 0.3
                elif k.endswith("running_var"):
                    sd[k] = torch.rand(sd[k].shape, generator=g) + 0.5
                elif k.endswith("num_batches_tracked"):
                    sd[k] = torch.tensor(7 if sd is a else 11)
    return net_a, a, b


def _data(n=96, shape=(1, 4, 4), seed=3, classes=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("make", [StagedCNN, PlainMLP])
@pytest.mark.parametrize("bn", ["keep", "reset"])
def test_sweep_matches_naive_loop_every_plan_and_rest(make, bn):
    model, a, b = _pair(make)
    x, y = _data()
    calib = _data(n=80, seed=5)[0] if bn == "reset" else None
    groups = default_groups(model, x[:2])
    paths = make_paths(groups, ["full", "single", "cumulative_front", "cumulative_back"])
    alphas = default_alphas(5)
    # calibration in 5 equal batches of 16 (update_bn, the reference, weighs batches equally),
    # evaluation in batches of 32
    ev = Evaluator(model, a, b, bn=bn, bn_batch_size=16)
    res = sweep(ev, paths, alphas, {"test": (x, y)}, calibration=calib, batch_size=32, chunk_size=3)
    assert len(res.curves) == len(paths) * len(alphas)
    for p in paths:
        rows = [
            r
            for r in res.curves
            if (r["plan"], r["group"], r["rest_from"]) == (p.plan, p.group, p.rest_from)
        ]
        losses, accs = naive_curve(
            model, a, b, set(p.keys), alphas, p.rest_from, x, y, calib, batch_size=16
        )
        assert [r["alpha"] for r in rows] == alphas
        for r, loss, acc in zip(rows, losses, accs, strict=False):
            assert r["loss"] == pytest.approx(loss, abs=1e-5), (p, r["alpha"])
            assert r["accuracy"] == pytest.approx(acc, abs=1e-6), (p, r["alpha"])


def test_cumulative_with_every_layer_equals_full_plan():
    model, a, b = _pair(StagedCNN)
    x, y = _data()
    groups = default_groups(model, x[:2])
    paths = make_paths(groups, ["full", "cumulative_front", "cumulative_back"], rest_from=["a"])
    res = sweep(Evaluator(model, a, b), paths, default_alphas(5), {"test": (x, y)})
    full = [r["loss"] for r in res.curves if r["plan"] == "full"]
    front = [
        r["loss"]
        for r in res.curves
        if r["plan"] == "cumulative_front" and r["group"] == groups[-1].name
    ]
    back = [
        r["loss"]
        for r in res.curves
        if r["plan"] == "cumulative_back" and r["group"] == groups[0].name
    ]
    assert front == pytest.approx(full, abs=1e-6)
    assert back == pytest.approx(full, abs=1e-6)


def test_single_layer_rest_a_starts_at_model_a_and_rest_b_ends_at_model_b():
    model, a, b = _pair(StagedCNN)
    x, y = _data()
    groups = default_groups(model, x[:2])
    res = sweep(
        Evaluator(model, a, b), make_paths(groups, ["single"]), [0.0, 0.5, 1.0], {"test": (x, y)}
    )
    loss_a = naive_eval(model, a, x, y)[0]
    loss_b = naive_eval(model, b, x, y)[0]
    for r in res.curves:
        if r["rest_from"] == "a" and r["alpha"] == 0.0:
            assert r["loss"] == pytest.approx(loss_a, abs=1e-6)
        if r["rest_from"] == "b" and r["alpha"] == 1.0:
            assert r["loss"] == pytest.approx(loss_b, abs=1e-6)
    assert res.endpoints["test"]["loss_a"] == pytest.approx(loss_a, abs=1e-6)
    assert res.endpoints["test"]["loss_b"] == pytest.approx(loss_b, abs=1e-6)


def test_barriers_equal_hand_computed_values_from_the_curve():
    model, a, b = _pair(StagedCNN)
    x, y = _data()
    groups = default_groups(model, x[:2])
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    res = sweep(
        Evaluator(model, a, b), make_paths(groups, ["full", "single"]), alphas, {"test": (x, y)}
    )
    la, lb = naive_eval(model, a, x, y)[0], naive_eval(model, b, x, y)[0]
    for row in res.barriers:
        curve = [
            r["loss"]
            for r in res.curves
            if (r["plan"], r["group"], r["rest_from"])
            == (row["plan"], row["group"], row["rest_from"])
        ]
        if row["reference"] == "path":
            line = [(1 - t) * curve[0] + t * curve[-1] for t in alphas]
            expect = max(f - g for f, g in zip(curve, line, strict=True))
        elif row["reference"] == "models":
            expect = max(f - ((1 - t) * la + t * lb) for f, t in zip(curve, alphas, strict=False))
        else:
            expect = curve[2] - (la + lb) / 2
        assert row["loss_barrier"] == pytest.approx(expect, abs=1e-6)


def test_deep_linear_network_curves_match_closed_form():
    """f(x) = W2 W1 x: the full path is a degree-4 polynomial; single layers are quadratics."""

    class DeepLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Linear(3, 3, bias=False)
            self.w2 = nn.Linear(3, 3, bias=False)

        def stages(self):
            return [("w1", self.w1), ("w2", self.w2)]

        def forward(self, x):
            return self.w2(self.w1(x))

    model, a, b = _pair(DeepLinear, bn_noise=False)
    x, y = _data(n=40, shape=(3,), classes=3)
    alphas = default_alphas(7)
    groups = default_groups(model, x[:2])
    res = sweep(Evaluator(model, a, b), make_paths(groups, ["full"]), alphas, {"test": (x, y)})
    for r, t in zip(res.curves, alphas, strict=False):
        w1 = (1 - t) * a["w1.weight"] + t * b["w1.weight"]
        w2 = (1 - t) * a["w2.weight"] + t * b["w2.weight"]
        logits = x @ w1.T @ w2.T
        expect = torch.nn.functional.cross_entropy(logits, y).item()
        assert r["loss"] == pytest.approx(expect, abs=1e-6)


def test_duplicate_models_are_evaluated_once_and_prefixes_are_shared():
    model, a, b = _pair(StagedCNN)
    x, y = _data(n=32)
    groups = default_groups(model, x[:2])
    ev = Evaluator(model, a, b)
    paths = make_paths(groups, ["single"], rest_from=["a"])
    sweep(
        ev,
        paths,
        [0.0, 0.25, 0.5, 0.75, 1.0],
        {"test": (x, y)},
        batch_size=32,
        chunk_size=len(paths),
    )
    # Distinct models: A, B, and for each of the 5 groups its 4 models with alpha > 0 (0 is A).
    # The final Linear stage is reached at most once per distinct model.
    distinct = 2 + 4 * len(groups)
    assert ev.stage_runs[-1] <= distinct * len(x)
    # conv1 is mixable: A's and B's conv1 outputs serve every alpha of its path (2 runs), and the
    # endpoint models A and B ran it once each before: 4 runs, not 2 + 5.
    assert ev.stage_runs[0] == 4 * len(x)


def test_suffix_chains_are_stacked_into_one_call_per_stage_with_the_same_results():
    model, a, b = _pair(StagedCNN)
    x, y = _data(n=16)
    groups = default_groups(model, x[:2])
    paths = make_paths(groups, ["single"], rest_from=["a"])
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    calls: dict[str, list[int]] = {}
    for name, stack in (("stacked", 2**28), ("one by one", 0)):  # 0: every chain runs on its own
        ev = Evaluator(model, a, b, stack_bytes=stack)
        sizes = calls.setdefault(name, [])
        hook = ev.stages[-1].module.register_forward_hook(
            lambda _m, inp, _o, sizes=sizes: sizes.append(len(inp[0]))
        )
        res = sweep(ev, paths, alphas, {"test": (x, y)}, batch_size=16, chunk_size=len(paths))
        hook.remove()
        calls[name + " rows"] = [sum(sizes)]
        for r in res.curves:
            path = next(p for p in paths if p.group == r["group"])
            expect = naive_eval(model, naive_state(a, b, set(path.keys), r["alpha"], "a"), x, y)
            assert r["loss"] == pytest.approx(expect[0], abs=1e-5)
    # The same rows reach the head either way, in far fewer calls when chains are stacked: the
    # 4 models of conv1's path (alpha > 0) share A's suffix after conv1, and so on.
    assert calls["stacked rows"] == calls["one by one rows"]
    assert len(calls["one by one"]) == calls["one by one rows"][0] // len(x)
    assert len(calls["stacked"]) < len(calls["one by one"]) / 2
    assert max(calls["stacked"]) >= 4 * len(x)


def test_stages_fall_back_to_whole_model_when_keys_are_not_covered():
    model = PlainMLP()
    st = model_stages(model, [*model.state_dict(), "extra.weight"])
    assert len(st) == 1 and st[0].module is model


def test_nan_loss_is_recorded_not_dropped():
    model, a, b = _pair(PlainMLP, bn_noise=False)
    b = dict(b)
    b["l2.bias"] = torch.full_like(b["l2.bias"], float("nan"))
    x, y = _data(n=16, shape=(16,))
    groups = default_groups(model, x[:2])
    res = sweep(
        Evaluator(model, a, b), make_paths(groups, ["full"]), [0.0, 0.5, 1.0], {"test": (x, y)}
    )
    assert not math.isnan(res.curves[0]["loss"])
    assert math.isnan(res.curves[1]["loss"]) and math.isnan(res.curves[2]["loss"])
    assert all(math.isnan(r["loss_barrier"]) for r in res.barriers)


def test_groups_are_in_forward_order_and_regroup_by_pattern_and_depth():
    model = StagedCNN()
    groups = default_groups(model, torch.zeros(1, 1, 4, 4))
    assert [g.name for g in groups] == ["conv1", "bn1", "block.conv", "block.bn", "fc"]
    assert set(groups[1].keys) == {
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    }
    merged = regroup(groups, ["block.*"])
    assert [g.name for g in merged] == ["conv1", "bn1", "block.*", "fc"]
    assert set(merged[2].keys) == set(groups[2].keys) | set(groups[3].keys)
    assert [g.name for g in group_by_depth(groups, 1)] == ["conv1", "bn1", "block", "fc"]
    with pytest.raises(LwlcError, match="matches no layer; available: conv1, bn1"):
        regroup(groups, ["layer9.*"])


def test_integer_buffers_come_from_the_rest_model():
    model, a, b = _pair(StagedCNN)
    keys = {k for k in a}
    for rest in ("a", "b"):
        st = naive_state(a, b, keys, 0.5, rest)
        assert st["bn1.num_batches_tracked"] == (a if rest == "a" else b)["bn1.num_batches_tracked"]
    from lwlc.core.interpolation import interpolate

    path = make_paths(default_groups(model), ["full"])[0]
    assert interpolate(a, b, path, 0.5)["bn1.num_batches_tracked"] == a["bn1.num_batches_tracked"]


ZOO = {
    "mlp": lambda: __import__("lwlc.models", fromlist=["MLP"]).MLP(
        in_features=16, width=12, depth=3, num_classes=4
    ),
    "vgg_bn": lambda: __import__("lwlc.models", fromlist=["VGG"]).VGG(
        batch_norm=True, width=8, num_classes=4
    ),
    "resnet_bn": lambda: __import__("lwlc.models", fromlist=["ResNet18"]).ResNet18(
        width=4, num_classes=4
    ),
    "resnet_none": lambda: __import__("lwlc.models", fromlist=["ResNet18"]).ResNet18(
        width=4, norm="none", num_classes=4
    ),
}


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("bn", ["keep", "reset"])
def test_engine_matches_naive_loop_on_the_model_zoo(name, bn):
    model, a, b = _pair(ZOO[name])
    shape = (1, 4, 4) if name == "mlp" else (3, 32, 32)
    x, y = _data(n=24, shape=shape)
    calib = _data(n=24, shape=shape, seed=9)[0] if bn == "reset" else None
    groups = default_groups(model, x[:2])
    plans = ["full", "single", "cumulative_front", "cumulative_back"]
    paths = make_paths(groups, plans)
    # a spread of paths keeps the test fast on big zoos: every plan, both rests, some groups
    names = {groups[0].name, groups[len(groups) // 2].name, groups[-1].name, "all"}
    paths = [p for p in paths if p.group in names]
    alphas = [0.0, 0.3, 1.0]
    res = sweep(
        Evaluator(model, a, b, bn=bn, bn_batch_size=12),
        paths,
        alphas,
        {"test": (x, y)},
        calibration=calib,
        batch_size=12,
    )
    for p in paths:
        got = [
            r["loss"]
            for r in res.curves
            if (r["plan"], r["group"], r["rest_from"]) == (p.plan, p.group, p.rest_from)
        ]
        want, _ = naive_curve(
            model, a, b, set(p.keys), alphas, p.rest_from, x, y, calib, batch_size=12
        )
        assert got == pytest.approx(want, abs=1e-5), p


def test_sequence_logits_are_scored_per_token():
    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(7, 5)
            self.head = nn.Linear(5, 7)

        def stages(self):
            return [("emb", self.emb), ("head", self.head)]

        def forward(self, x):
            return self.head(self.emb(x))

    model, a, b = _pair(TinyLM, bn_noise=False)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 7, (6, 4), generator=g), torch.randint(0, 7, (6, 4), generator=g)
    groups = default_groups(model, x[:2])
    res = sweep(
        Evaluator(model, a, b),
        make_paths(groups, ["full"]),
        [0.0, 0.5, 1.0],
        {"test": (x, y)},
        batch_size=4,
    )
    for r, t in zip(res.curves, [0.0, 0.5, 1.0], strict=False):
        net = TinyLM()
        net.load_state_dict(naive_state(a, b, set(a), t, "a"))
        logits = net(x).reshape(-1, 7)
        assert r["loss"] == pytest.approx(
            torch.nn.functional.cross_entropy(logits, y.reshape(-1)).item(), abs=1e-6
        )
        assert r["accuracy"] == pytest.approx(
            (logits.argmax(1) == y.reshape(-1)).float().mean().item()
        )


def test_bf16_fast_mode_is_close_to_fp32_but_not_identical():
    model, a, b = _pair(StagedCNN)
    x, y = _data()
    paths = make_paths(default_groups(model, x[:2]), ["full"])
    exact = sweep(Evaluator(model, a, b), paths, [0.0, 0.5, 1.0], {"test": (x, y)})
    fast = sweep(Evaluator(model, a, b, precision="bf16"), paths, [0.0, 0.5, 1.0], {"test": (x, y)})
    dev = [abs(e["loss"] - f["loss"]) for e, f in zip(exact.curves, fast.curves, strict=False)]
    assert max(dev) < 0.05 and max(dev) > 0.0
    with pytest.raises(LwlcError, match="precision must be one of fp32, tf32, bf16"):
        Evaluator(model, a, b, precision="fp16")


def test_stack_limit_takes_a_share_of_what_the_memory_plan_leaves():
    from lwlc.core import memory

    chosen = memory.MemoryPlan(
        batch_size=10, chunk_size=4, budget=1000, fixed=100, weights=100, activations_per_sample=10
    )
    # estimate 100 + 100 + 10 * 10 = 300 of 0.7 * 1000 = 700 usable: 400 free, a sixth of it
    assert memory.stack_bytes(chosen, 10_000) == 400 // memory.STACK_FACTOR
    assert memory.stack_bytes(chosen, 10) == 10
    full = memory.MemoryPlan(
        batch_size=50, chunk_size=4, budget=1000, fixed=100, weights=100, activations_per_sample=10
    )
    assert memory.stack_bytes(full, 10_000) == 0  # estimate 700: nothing left, no stacking


@pytest.mark.parametrize("bn", ["keep", "reset"])
def test_a_float64_pair_is_measured_in_float64_from_float32_data(bn):
    # A network trained with --trainer.precision 64-true: the data stays float32 on disk.
    model, a, b = _pair(StagedCNN)
    model, a, b = (
        model.double(),
        {k: v.double() for k, v in a.items()},
        {k: v.double() for k, v in b.items()},
    )
    x, y = _data()
    calib = _data(n=80, seed=5)[0] if bn == "reset" else None
    paths = make_paths(default_groups(model, x[:2].double()), ["full", "single"])
    ev = Evaluator(model, a, b, bn=bn, bn_batch_size=16)
    res = sweep(ev, paths, [0.0, 0.5, 1.0], {"test": (x, y)}, calibration=calib, batch_size=32)
    for p in paths:
        losses, _ = naive_curve(
            model,
            a,
            b,
            set(p.keys),
            [0.0, 0.5, 1.0],
            p.rest_from,
            x.double(),
            y,
            None if calib is None else calib.double(),
            batch_size=16,
        )
        rows = [
            r
            for r in res.curves
            if (r["plan"], r["group"], r["rest_from"]) == (p.plan, p.group, p.rest_from)
        ]
        assert [r["loss"] for r in rows] == pytest.approx(losses, abs=1e-12)


@pytest.mark.parametrize("dtype_b", [torch.float32, torch.float64])
def test_mix_is_the_plain_formula_to_the_bit_and_returns_the_endpoints_themselves(dtype_b):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=g), torch.randn(1000, generator=g, dtype=dtype_b)
    assert mix(a, b, 0.0) is a and mix(a, b, 1.0) is b
    for c in (0.1, 0.3, 0.5, 0.7, 0.9):
        mixed = mix(a, b, c)
        assert mixed.dtype == ((1.0 - c) * a + c * b).dtype
        assert torch.equal(mixed, (1.0 - c) * a + c * b)
        assert mixed.data_ptr() not in (a.data_ptr(), b.data_ptr())  # the endpoints untouched
