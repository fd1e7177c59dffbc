"""Stages for any network: the pieces whose sequential application is its forward pass.

The engine shares the activations of prefixes of stages between interpolated models. lwlc's own
models say what their stages are (``stages()``); for any other network they are derived here:
an ``nn.Sequential``'s children, or else the network traced with ``torch.fx`` and cut wherever a
single value carries the whole computation (every later node reads the earlier ones only through
it, and no module with state nor directly read parameter is used on both sides). A piece that is
one call of a submodule is that submodule itself (so a lone Linear or Conv stays mixable); any
other piece is an ``fx.GraphModule`` sharing the network's submodules, whose state-dict keys are
the network's own. When neither works the whole network is one stage, and ``how`` says why.

Children and fx pieces are a guess about the network (a subclass of ``nn.Sequential`` may flatten
its input in its own ``forward`` first): :func:`verify_stages` runs them one after another on a
real sample and compares with the network's own forward; pieces that disagree are replaced by
the next way (fx, then one stage), and the verified stages are what :func:`find_stages` returns
for that network from then on.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor, fx, nn

Pair = tuple[str, nn.Module]


@dataclass(frozen=True)
class FoundStages:
    """The (name, module) stages of a network and how they were found, for messages."""

    pairs: list[Pair]
    how: str


# the attribute where verify_stages records its verdict on a network (kept by copy.deepcopy):
# (which way, how), the way being "children", "fx" or "one"
VERDICT = "lwlc_verified_stages"
TOLERANCE = 1e-6


def find_stages(model: nn.Module) -> FoundStages:
    """``model.stages()``, a Sequential's children, fx-graph cuts, or the whole model (in turn).

    A model with ``stages()`` may name how they were found in a ``stages_how`` attribute (e.g.
    ``lwlc.formats.hf.CausalLM``, whose blocks are found from its module structure).

    A stage named ``n`` owns the keys ``n.<its own state-dict key>``; an unnamed stage (an fx
    piece) owns its own state-dict keys, which are the model's.
    """
    if hasattr(model, "stages"):
        pairs = list(model.stages())  # then ``stages_how``, which stages() may set
        return FoundStages(pairs, getattr(model, "stages_how", "stages()"))
    verdict = getattr(model, VERDICT, None)
    if verdict is not None:
        way, how = verdict
        pairs = {"children": list(model.named_children()), "fx": None, "one": [("", model)]}[way]
        return FoundStages(pairs or traced_stages(model).pairs, how)
    if isinstance(model, nn.Sequential) and len(model) > 1:
        return FoundStages(list(model.named_children()), "sequential children")
    return traced_stages(model)


def traced_stages(model: nn.Module) -> FoundStages:
    """The fx-graph cuts of ``model``, or the whole model as one stage (``how`` says why)."""
    try:
        graph = fx.symbolic_trace(model)
    except Exception as err:  # fx refuses data-dependent control flow and much else
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        return FoundStages([("", model)], f"one stage: fx could not trace it ({reason})")
    pieces = cut_graph(graph)
    if len(pieces) < 2:
        return FoundStages([("", model)], "one stage: the fx graph has no single-tensor cut")
    return FoundStages(pieces, f"fx graph, {len(pieces) - 1} cuts")


def _differs(model: nn.Module, pairs: list[Pair], sample: Tensor) -> str | None:
    """Why running ``pairs`` in turn on ``sample`` is not ``model(sample)`` (to 1e-6), or None."""
    try:
        with torch.no_grad():
            want = model(sample)
            got = sample
            for _, module in pairs:
                got = module(got)
    except Exception as err:  # a piece that cannot take its predecessor's output
        return " ".join(str(err).split())[:120] or type(err).__name__
    if not isinstance(want, Tensor) or not isinstance(got, Tensor):
        return None if want is got else "they give no single tensor"
    if got.shape != want.shape:
        return f"they give shape {tuple(got.shape)}, the model {tuple(want.shape)}"
    if not torch.allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True):
        return f"outputs differ by up to {float((got - want).abs().max()):.3g}"
    return None


def verify_stages(model: nn.Module, sample: Tensor) -> FoundStages:
    """The stages of ``model`` (:func:`find_stages`), checked against its own forward on the real
    ``sample`` in eval mode: sequential children that disagree give way to fx cuts, cuts that
    disagree to one stage, and ``how`` says why. Recorded on ``model`` (and its copies), so
    :func:`find_stages` gives the same from then on."""
    if hasattr(model, "stages"):
        return find_stages(model)
    if hasattr(model, VERDICT):
        delattr(model, VERDICT)
    found = find_stages(model)
    way = "children" if found.how == "sequential children" else "fx"
    training = model.training
    model.eval()
    try:
        reason = _differs(model, found.pairs, sample) if len(found.pairs) > 1 else None
        if reason is not None and found.how == "sequential children":
            traced = traced_stages(model)
            why = f"the sequential children differ from its forward: {reason}"
            reason = _differs(model, traced.pairs, sample) if len(traced.pairs) > 1 else None
            found, way = FoundStages(traced.pairs, f"{traced.how}; {why}"), "fx"
        if len(found.pairs) < 2:
            way = "one"
        if reason is not None:
            way = "one"
            found = FoundStages([("", model)], f"one stage: {found.how} differs from its "
                                f"forward ({reason})")  # fmt: skip
    finally:
        model.train(training)
    setattr(model, VERDICT, (way, found.how))
    return found


def cut_graph(traced: fx.GraphModule) -> list[Pair]:
    """The traced network cut after every node that alone carries the computation onwards."""
    nodes = list(traced.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return [("", traced)]
    order = [n for n in nodes if n.op not in ("placeholder", "get_attr", "output")]
    position = {n: i for i, n in enumerate(order)}
    position[inputs[0]] = -1
    last_use: dict[fx.Node, int] = {}
    for i, n in enumerate(order):
        for arg in n.all_input_nodes:
            if arg in position:
                last_use[arg] = max(last_use.get(arg, -1), i)
    output = next(n for n in nodes if n.op == "output")
    for arg in output.all_input_nodes:
        last_use[arg] = len(order)
    # a module with state, or a parameter read directly, stays in one piece: the engine binds a
    # stage's tensors once per stage, so a second piece would run with whatever was bound last
    spans: dict[object, list[int]] = {}
    for i, n in enumerate(order):
        held = [a for a in n.all_input_nodes if a.op == "get_attr"]
        if n.op == "call_module" and traced.get_submodule(str(n.target)).state_dict():
            held.append(n.target)
        for h in held:
            spans.setdefault(h, []).append(i)
    split = {i for used in spans.values() for i in range(min(used), max(used))}
    cuts = []
    live = {inputs[0]} if inputs[0] in last_use else set()
    for i, n in enumerate(order):
        live = {v for v in live if last_use[v] > i}
        if n in last_use and last_use[n] > i:
            live.add(n)
        if i < len(order) - 1 and i not in split and live == {n} and _is_tensor_like(n):
            cuts.append(i)
    bounds = [-1, *cuts, len(order) - 1]
    return [
        _piece(
            traced, order[lo + 1 : hi + 1], order[lo] if lo >= 0 else inputs[0], hi == bounds[-1]
        )
        for lo, hi in pairwise(bounds)
    ]


def _is_tensor_like(node: fx.Node) -> bool:
    """False for values that are containers or sizes (read by ``getitem`` or ``size``)."""
    if node.op == "call_method" and node.target in ("size", "dim", "chunk", "split", "unbind"):
        return False
    if node.op == "call_function" and node.target in (getattr, operator.getitem, len):
        return False
    return not any(u.op == "call_function" and u.target is operator.getitem for u in node.users)


def _piece(traced: fx.GraphModule, body: Sequence[fx.Node], start: fx.Node, last: bool) -> Pair:
    """One stage: ``body``'s nodes reading ``start``; the lone submodule if it is one call."""
    if (
        len(body) == 1
        and body[0].op == "call_module"
        and body[0].args == (start,)
        and not body[0].kwargs
    ):
        return str(body[0].target), traced.get_submodule(str(body[0].target))
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {start: graph.placeholder("x")}

    def lookup(n: fx.Node) -> fx.Node:
        if n not in env:  # a parameter or buffer read directly
            env[n] = graph.node_copy(n, lookup)
        return env[n]

    for n in body:
        env[n] = graph.node_copy(n, lookup)
    if last:
        out = next(n for n in traced.graph.nodes if n.op == "output")
        graph.output(fx.map_arg(out.args[0], lookup))
    else:
        graph.output(env[body[-1]])
    return "", fx.GraphModule(traced, graph, class_name="Stage")
