"""Stages for any network: the pieces whose sequential application is its forward pass.

The engine shares the activations of prefixes of stages between interpolated models. lwlc's own
models say what their stages are (``stages()``); for any other network they are derived here:
an ``nn.Sequential``'s children, or else the network traced with ``torch.fx`` and cut wherever a
single value carries the whole computation (every later node reads the earlier ones only through
it, and no module with state nor directly read parameter is used on both sides). A piece that is
one call of a submodule is that submodule itself (so a lone Linear or Conv stays mixable); any
other piece is an ``fx.GraphModule`` sharing the network's submodules, whose state-dict keys are
the network's own. When neither works the whole network is one stage, and ``how`` says why.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from torch import fx, nn

Pair = tuple[str, nn.Module]


@dataclass(frozen=True)
class FoundStages:
    """The (name, module) stages of a network and how they were found, for messages."""

    pairs: list[Pair]
    how: str


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
    if isinstance(model, nn.Sequential) and len(model) > 1:
        return FoundStages(list(model.named_children()), "sequential children")
    try:
        graph = fx.symbolic_trace(model)
    except Exception as err:  # fx refuses data-dependent control flow and much else
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        return FoundStages([("", model)], f"one stage: fx could not trace it ({reason})")
    pieces = cut_graph(graph)
    if len(pieces) < 2:
        return FoundStages([("", model)], "one stage: the fx graph has no single-tensor cut")
    return FoundStages(pieces, f"fx graph, {len(pieces) - 1} cuts")


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
