"""Evaluate many interpolated models of one architecture over in-memory data, exactly and fast.

Each model is given by one coefficient per state-dict key (see ``interpolation``). The network
is split into *stages* (modules whose sequential application is the forward pass:
``model.stages()`` when the model defines it, else derived by ``lwlc.core.stages``). Models whose
coefficients agree on stages 0..s compute identical activations up to s, so the models form a
tree of shared prefixes: every node of the tree is computed once per batch and its activation
feeds all its children. A stage that is a single Linear or Conv layer with one coefficient c for
weight and bias outputs ``(1 - c) * f(x; a) + c * f(x; b)`` (it is linear in its parameters), so
its two endpoint outputs are computed once and mixed for every alpha. Duplicate models (equal
coefficients) are leaves of the same node and cost nothing extra. Subtrees that are one chain
of stages down to a leaf with the same coefficients (the rest model's suffix after a single
interpolated layer, at every alpha) are batched: their activations are stacked along the batch
dimension and run through the chain in one call per stage (in eval mode every sample is
independent, so stacking changes nothing but the number of calls).

BatchNorm ``reset`` recomputes each model's running statistics before evaluating, by the fixed
procedure of ``lwlc.core.calibration`` (its own batch size, the calibration inputs in order, a
cumulative average weighted by sample count), so they do not depend on the evaluation batch
size or on which models are evaluated together. The statistics of a stage depend only on the
coefficients up to that stage, i.e. on the tree node, so calibration runs the same batches with
the same momenta through the same tree and stores statistics per node.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lwlc.core.calibration import calibrating, calibration_batches
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import mix
from lwlc.core.precision import PRECISIONS
from lwlc.core.spec import BATCH_SIZE, BN_BATCH_SIZE
from lwlc.core.stages import find_stages

Coefficients = tuple[float, ...]
_MIXABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Stage:
    """One step of the forward pass and the state-dict keys it owns (full and local names)."""

    name: str
    module: nn.Module
    keys: tuple[str, ...]
    local: tuple[str, ...]
    mixable: bool


def model_stages(model: nn.Module, keys: Sequence[str]) -> list[Stage]:
    """The model's stages with their keys (``lwlc.core.stages.find_stages``); the whole model as
    one stage if they do not cover its keys. A key held by several stages (a tied tensor, e.g. a
    language model's embedding reused as its output layer) belongs to each of them, so every
    stage that uses it is bound to the same model's value."""
    stages: list[Stage] = []
    claimed: set[str] = set()
    for name, module in find_stages(model).pairs:
        prefix = f"{name}." if name else ""
        local = set(module.state_dict())
        own = tuple(
            k
            for k in keys
            if k.startswith(prefix) and k[len(prefix) :] in local
        )
        claimed.update(own)
        mixable = isinstance(module, _MIXABLE) and not any(True for _ in module.named_buffers())
        stages.append(Stage(name, module, own, tuple(k[len(prefix) :] for k in own), mixable))
    if claimed != set(keys):
        return [Stage("", model, tuple(keys), tuple(keys), False)]
    return stages


@dataclass
class _Node:
    """A tree node: the activation after ``depth`` stages for all models below it."""

    depth: int
    token: Coefficients
    children: dict[Coefficients, _Node] = field(default_factory=dict)
    models: list[int] = field(default_factory=list)
    stats: dict[str, Tensor] = field(default_factory=dict)
    chain: tuple[int, tuple[Coefficients, ...]] | None = None  # (depth, tokens below) if deferred
    leaf: _Node | None = None  # the chain's leaf
    index: Tensor | None = None  # a leaf's model indices, on the device


Leaf = Callable[[list[_Node], Tensor], None]  # scores the stacked logits of leaf nodes


@dataclass
class Metrics:
    """Summed cross-entropy and correct predictions of one model on one split (per token)."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")


def _tensor_owners(module: nn.Module, names: Sequence[str]) -> list[list[tuple[dict, str]]]:
    """For each local state name, every ``(_parameters or _buffers dict, key)`` holding its tensor.

    A tied tensor (e.g. a language model's input embedding and output head) is one state-dict
    entry held by several modules: all of them are listed, so that binding keeps the tie.
    """
    holders: dict[int, list[tuple[dict, str]]] = {}
    for _, sub in module.named_modules(remove_duplicate=False):
        for store in (sub._parameters, sub._buffers):
            for attr, tensor in store.items():
                if tensor is not None:
                    holders.setdefault(id(tensor), []).append((store, attr))
    owners = []
    for name in names:
        path, _, attr = name.rpartition(".")
        sub = module.get_submodule(path)
        tensor = sub._parameters[attr] if attr in sub._parameters else sub._buffers[attr]
        owners.append(holders[id(tensor)])
    return owners


def _bn_stat_names(module: nn.Module) -> tuple[str, ...]:
    """Local names of the running statistics of every BatchNorm inside ``module``."""
    names = []
    for path, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.track_running_stats:
            prefix = f"{path}." if path else ""
            names += [prefix + n for n in ("running_mean", "running_var", "num_batches_tracked")]
    return tuple(names)


class Evaluator:
    """Evaluates sets of interpolated models between state dicts ``a`` and ``b`` of ``model``.

    ``stack_bytes`` bounds the activations held back for batched chains (see the module doc);
    default 16 MiB on a CPU (measured: as fast as 256 MiB, and far less memory), 1 GiB on a GPU
    (where bigger calls keep the device busy). ``bn_batch_size``: the calibration batch size of
    ``bn="reset"`` (``lwlc.core.calibration``).
    """

    def __init__(
        self,
        model: nn.Module,
        a: Mapping[str, Tensor],
        b: Mapping[str, Tensor],
        device: str | torch.device = "cpu",
        bn: str = "keep",
        precision: str = "fp32",
        stack_bytes: int | None = None,
        bn_batch_size: int = BN_BATCH_SIZE,
    ) -> None:
        if bn not in ("keep", "reset"):
            raise LwlcError(f"bn mode must be 'keep' or 'reset', got {bn!r}")
        if bn_batch_size < 1:
            raise LwlcError(f"the BatchNorm batch size must be >= 1, got {bn_batch_size}")
        if precision not in PRECISIONS:
            raise LwlcError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        self.bn = bn
        self.bn_batch_size = bn_batch_size
        self.precision = precision
        self.stack_bytes = (
            stack_bytes
            if stack_bytes is not None
            else 2**30
            if self.device.type == "cuda"
            else 2**24
        )
        self.net = copy.deepcopy(model).to(self.device).eval()
        self.keys = list(a.keys())
        self.float_keys = frozenset(k for k in self.keys if torch.is_floating_point(a[k]))
        # Floating inputs take the weights' dtype (a network trained in float64 gets float64).
        self.input_dtype = next((a[k].dtype for k in self.keys if k in self.float_keys), None)
        self.a = {k: v.to(self.device) for k, v in a.items()}
        self.b = {k: v.to(self.device) for k, v in b.items()}
        self.stages = model_stages(self.net, self.keys)
        index = {k: i for i, k in enumerate(self.keys)}
        self._slots = [tuple(index[k] for k in st.keys) for st in self.stages]
        self._stat_names = [
            _bn_stat_names(st.module) if bn == "reset" else () for st in self.stages
        ]
        self._owners = [_tensor_owners(st.module, st.local) for st in self.stages]
        self._params: dict[tuple[int, Coefficients], dict[str, Tensor]] = {}
        self._bound: list[object] = [None] * len(self.stages)
        self._pending: dict[tuple[int, tuple[Coefficients, ...]], list[tuple[_Node, Tensor]]] = {}
        self._pending_bytes = 0
        self._chain_sizes: dict[tuple[int, tuple[Coefficients, ...]], int] = {}
        self.stage_runs = [0] * len(
            self.stages
        )  # samples through each stage: the work actually done

    def has_batchnorm(self) -> bool:
        """Whether any stage holds BatchNorm running statistics."""
        return any(_bn_stat_names(st.module) for st in self.stages)

    def _stage_params(self, s: int, token: Coefficients) -> dict[str, Tensor]:
        """Stage ``s``'s local state for coefficients ``token`` (cached across batches)."""
        cached = self._params.get((s, token))
        if cached is None:
            st = self.stages[s]
            cached = {
                loc: mix(self.a[k], self.b[k], c)
                for loc, k, c in zip(st.local, st.keys, token, strict=True)
            }
            self._params[(s, token)] = cached
        return cached

    def _build(self, models: Sequence[Coefficients]) -> _Node:
        root = _Node(0, ())
        for m, coeffs in enumerate(models):
            if len(coeffs) != len(self.keys):
                raise ValueError(
                    f"model {m} has {len(coeffs)} coefficients, expected {len(self.keys)}"
                )
            node = root
            for s, slots in enumerate(self._slots):
                token = tuple(coeffs[i] for i in slots)
                node = node.children.setdefault(token, _Node(s + 1, token))
            node.models.append(m)
        return root

    def _plan(self, root: _Node) -> None:
        """Index each leaf's models on the device, and mark the chains worth batching.

        A chain is a node whose descendants form a single line to a leaf, with no per-node
        BatchNorm statistics; its first node below a branching is deferred when another such
        node has the same depth and the same tokens below.
        """
        found: dict[tuple[int, tuple[Coefficients, ...]], list[_Node]] = {}

        def visit(node: _Node, in_chain: bool) -> None:
            if not node.children:
                node.index = torch.tensor(node.models, device=self.device)
                return
            line, end = [], node
            while len(end.children) == 1 and not end.stats:
                end = next(iter(end.children.values()))
                line.append(end.token)
            chain = node.depth > 0 and not end.children and not end.stats
            if chain and not in_chain:
                node.leaf = end
                found.setdefault((node.depth, tuple(line)), []).append(node)
            for child in node.children.values():
                visit(child, in_chain or chain)

        visit(root, False)
        self._chain_sizes = {key: len(nodes) for key, nodes in found.items()}
        for key, nodes in found.items():
            for node in nodes:
                node.chain = key if len(nodes) > 1 else None

    def _bind(self, s: int, child: _Node) -> nn.Module:
        """Stage ``s``'s module holding the child's tensors (set in place: no copies, no checks)."""
        stage = self.stages[s]
        key = id(child) if child.stats else child.token
        if stage.keys and self._bound[s] != key:
            state = {**self._stage_params(s, child.token), **child.stats}
            for loc, holders in zip(stage.local, self._owners[s], strict=True):
                for store, attr in holders:
                    store[attr] = state[loc]
            self._bound[s] = key
        return stage.module

    def _run(self, s: int, child: _Node, x: Tensor) -> Tensor:
        self.stage_runs[s] += x.shape[0]
        return self._bind(s, child)(x)

    def _descend(self, node: _Node, x: Tensor, leaf: Leaf) -> None:
        if node.chain is not None:
            self._defer(node, x, leaf)
            return
        if node.depth == len(self.stages):
            leaf([node], x)
            return
        s = node.depth
        stage = self.stages[s]
        uniform = [
            c.token[0]
            for c in node.children.values()
            if stage.mixable and c.token and len(set(c.token)) == 1
        ]
        # mixing costs two runs (A's and B's layer): only worth it for two or more alphas
        mixing = sum(0.0 < c < 1.0 for c in uniform) >= 2
        ends: dict[float, Tensor] = {}
        for child in node.children.values():
            token = child.token
            if mixing and token and len(set(token)) == 1:
                c = token[0]
                for end in (0.0, 1.0) if 0.0 < c < 1.0 else (c,):
                    if end not in ends:
                        ends[end] = self._run(s, _Node(s + 1, (end,) * len(token)), x)
                y = ends[c] if c in ends else mix(ends[0.0], ends[1.0], c)
            else:
                y = self._run(s, child, x)
            self._descend(child, y, leaf)

    def _defer(self, node: _Node, x: Tensor, leaf: Leaf) -> None:
        """Hold ``x`` back until the other nodes of its chain arrive or the stack is full."""
        assert node.chain is not None
        waiting = self._pending.setdefault(node.chain, [])
        waiting.append((node, x))
        self._pending_bytes += x.numel() * x.element_size()
        if self._pending_bytes >= self.stack_bytes or len(waiting) == self._chain_sizes[node.chain]:
            self._flush(node.chain, leaf)

    def _flush(self, chain: tuple[int, tuple[Coefficients, ...]], leaf: Leaf) -> None:
        """Run the held-back activations of one chain through it as one stacked batch."""
        waiting = self._pending.pop(chain)
        leaves = [node.leaf for node, _ in waiting if node.leaf is not None]
        x = torch.cat([held for _, held in waiting]) if len(waiting) > 1 else waiting[0][1]
        del waiting  # the held activations are in x now
        self._pending_bytes -= x.numel() * x.element_size()
        depth, tokens = chain
        for s, token in enumerate(tokens, start=depth):
            x = self._run(s, _Node(s + 1, token), x)
        leaf(leaves, x)

    def _flush_all(self, leaf: Leaf) -> None:
        for chain in list(self._pending):
            self._flush(chain, leaf)

    @contextlib.contextmanager
    def _fast_math(self) -> Iterator[None]:
        """The requested precision for the evaluation pass (``lwlc.core.precision``)."""
        if self.device.type == "cuda" and torch.backends.cudnn.benchmark:
            # Stacked chains give many one-off batch sizes: autotuning each (a Trainer with
            # benchmark=true turns it on) costs far more than it saves.
            torch.backends.cudnn.benchmark = False
            try:
                with self._fast_math():
                    yield
            finally:
                torch.backends.cudnn.benchmark = True
        else:
            with PRECISIONS[self.precision](self.device):
                yield

    def _init_stats(self, node: _Node) -> None:
        """Fresh running statistics (as ``reset_running_stats``) for every BatchNorm node."""
        for child in node.children.values():
            names = self._stat_names[child.depth - 1]
            if names:
                params = dict(self.stages[child.depth - 1].module.named_buffers())
                child.stats = {
                    n: torch.zeros_like(params[n])
                    if not n.endswith("running_var")
                    else torch.ones_like(params[n])
                    for n in names
                }
            self._init_stats(child)

    def _to_device(self, inputs: Tensor) -> Tensor:
        """A batch on the evaluation device; floating inputs in the weights' dtype."""
        if inputs.is_floating_point() and self.input_dtype is not None:
            return inputs.to(self.device, self.input_dtype)
        return inputs.to(self.device)

    def _calibrate(self, root: _Node, inputs: Tensor) -> None:
        """Every node's BatchNorm statistics by ``lwlc.core.calibration``'s batches and momenta
        (nodes are not chained yet, so every model sees every batch through its own nodes)."""
        self._init_stats(root)
        with calibrating(self.net) as norms:
            for batch, momentum in calibration_batches(inputs, self.bn_batch_size):
                for m in norms:
                    m.momentum = momentum
                self._descend(root, self._to_device(batch), lambda _models, _out: None)

    @torch.no_grad()
    def evaluate(
        self,
        models: Sequence[Coefficients],
        inputs: Tensor,
        targets: Tensor,
        batch_size: int = BATCH_SIZE,
        calibration: Tensor | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Metrics]:
        """Loss and accuracy of every model on (inputs, targets) in batches of ``batch_size``;
        ``calibration``: the inputs of bn=reset (in batches of ``bn_batch_size``, whatever
        ``batch_size`` is)."""
        root = self._build(models)
        self._bound = [None] * len(self.stages)
        if self.bn == "reset" and any(self._stat_names):
            if calibration is None or len(calibration) == 0:
                raise LwlcError(
                    "bn mode 'reset' needs training data to recompute BatchNorm statistics"
                )
            with self._fast_math():
                self._calibrate(root, calibration)
        self._plan(root)
        # Sums stay on the device until the end: reading one per leaf would stall a GPU each time.
        loss_sums = torch.zeros(len(models), dtype=torch.float64, device=self.device)
        correct = torch.zeros(len(models), dtype=torch.int64, device=self.device)
        counts = [0] * len(models)

        for i in range(0, len(inputs), batch_size):
            x = self._to_device(inputs[i : i + batch_size])
            y = targets[i : i + batch_size].to(self.device)

            def leaf(nodes: list[_Node], logits: Tensor, y: Tensor = y) -> None:
                logits, target = (  # half-precision logits are scored in float32
                    (logits if logits.dtype == torch.float64 else logits.float()).flatten(0, -2),
                    y.flatten().repeat(len(nodes)),
                )  # per token
                losses = F.cross_entropy(logits, target, reduction="none").view(len(nodes), -1)
                hits = (logits.argmax(dim=1) == target).view(len(nodes), -1).sum(1)
                losses = losses.sum(1, dtype=torch.float64)
                for j, node in enumerate(nodes):
                    assert node.index is not None
                    loss_sums.index_add_(0, node.index, losses[j].expand(len(node.index)))
                    correct.index_add_(0, node.index, hits[j].expand(len(node.index)))
                    for m in node.models:
                        counts[m] += y.numel()

            with self._fast_math():
                self._descend(root, x, leaf)
                self._flush_all(leaf)
            if progress is not None:
                progress(len(x))
        self._params.clear()
        self._bound = [None] * len(self.stages)
        return [
            Metrics(s, c, n)
            for s, c, n in zip(loss_sums.tolist(), correct.tolist(), counts, strict=True)
        ]
