"""Evaluate many interpolated models of one architecture over in-memory data, exactly and fast.

Each model is given by one coefficient per state-dict key (see ``interpolation``). The network
is split into *stages* (``model.stages()`` when the model defines it: modules whose sequential
application is the forward pass; otherwise the whole model is one stage). Models whose
coefficients agree on stages 0..s compute identical activations up to s, so the models form a
tree of shared prefixes: every node of the tree is computed once per batch and its activation
feeds all its children. A stage that is a single Linear or Conv layer with one coefficient c for
weight and bias outputs ``(1 - c) * f(x; a) + c * f(x; b)`` (it is linear in its parameters), so
its two endpoint outputs are computed once and mixed for every alpha. Duplicate models (equal
coefficients) are leaves of the same node and cost nothing extra.

BatchNorm ``reset`` recomputes each model's running statistics on calibration batches (as
``torch.optim.swa_utils.update_bn``: train mode, cumulative average) before evaluating. The
statistics of a stage depend only on the coefficients up to that stage, i.e. on the tree node,
so calibration runs through the same tree and stores statistics per node.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lwlc.errors import LwlcError
from lwlc.interpolation import mix

Coefficients = tuple[float, ...]
# fp32 is exact; tf32 (CUDA matmuls/convs) and bf16 (autocast) trade accuracy for speed.
PRECISIONS = ("fp32", "tf32", "bf16")
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
    """The model's stages with their keys; the whole model as one stage if it defines none."""
    pairs: list[tuple[str, nn.Module]] = list(model.stages()) if hasattr(model, "stages") else [("", model)]
    stages: list[Stage] = []
    claimed: set[str] = set()
    for name, module in pairs:
        prefix = f"{name}." if name else ""
        own = tuple(k for k in keys if k.startswith(prefix) and k not in claimed)
        claimed.update(own)
        mixable = isinstance(module, _MIXABLE) and not any(True for _ in module.named_buffers())
        stages.append(Stage(name, module, own, tuple(k[len(prefix):] for k in own), mixable))
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


@dataclass
class Metrics:
    """Summed cross-entropy and correct predictions of one model on one split (per token for sequences)."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")


def _bn_stat_names(module: nn.Module) -> tuple[str, ...]:
    """Local names of the running statistics of every BatchNorm inside ``module``."""
    names = []
    for path, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.track_running_stats:
            prefix = f"{path}." if path else ""
            names += [prefix + n for n in ("running_mean", "running_var", "num_batches_tracked")]
    return tuple(names)


class Evaluator:
    """Evaluates sets of interpolated models between state dicts ``a`` and ``b`` of ``model``."""

    def __init__(
        self,
        model: nn.Module,
        a: Mapping[str, Tensor],
        b: Mapping[str, Tensor],
        device: str | torch.device = "cpu",
        bn: str = "keep",
        precision: str = "fp32",
    ) -> None:
        if bn not in ("keep", "reset"):
            raise LwlcError(f"bn mode must be 'keep' or 'reset', got {bn!r}")
        if precision not in PRECISIONS:
            raise LwlcError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        self.bn = bn
        self.precision = precision
        self.net = copy.deepcopy(model).to(self.device).eval()
        self.keys = list(a.keys())
        self.float_keys = frozenset(k for k in self.keys if torch.is_floating_point(a[k]))
        self.a = {k: v.to(self.device) for k, v in a.items()}
        self.b = {k: v.to(self.device) for k, v in b.items()}
        self.stages = model_stages(self.net, self.keys)
        index = {k: i for i, k in enumerate(self.keys)}
        self._slots = [tuple(index[k] for k in st.keys) for st in self.stages]
        self._stat_names = [_bn_stat_names(st.module) if bn == "reset" else () for st in self.stages]
        if bn == "reset":
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = None
        self._params: dict[tuple[int, Coefficients], dict[str, Tensor]] = {}
        self._modules: dict[object, nn.Module] = {}
        self.stage_runs = [0] * len(self.stages)  # samples through each stage: the work actually done

    def has_batchnorm(self) -> bool:
        """Whether any stage holds BatchNorm running statistics."""
        return any(_bn_stat_names(st.module) for st in self.stages)

    def _stage_params(self, s: int, token: Coefficients) -> dict[str, Tensor]:
        """Stage ``s``'s local state for coefficients ``token`` (cached across batches)."""
        cached = self._params.get((s, token))
        if cached is None:
            st = self.stages[s]
            cached = {loc: mix(self.a[k], self.b[k], c) for loc, k, c in zip(st.local, st.keys, token)}
            self._params[(s, token)] = cached
        return cached

    def _build(self, models: Sequence[Coefficients]) -> _Node:
        root = _Node(0, ())
        for m, coeffs in enumerate(models):
            if len(coeffs) != len(self.keys):
                raise ValueError(f"model {m} has {len(coeffs)} coefficients, expected {len(self.keys)}")
            node = root
            for s, slots in enumerate(self._slots):
                token = tuple(coeffs[i] for i in slots)
                node = node.children.setdefault(token, _Node(s + 1, token))
            node.models.append(m)
        return root

    def _module(self, s: int, child: _Node) -> nn.Module:
        """A clone of stage ``s`` holding the child's tensors (shared, not copied), cached.

        Calling a real module is much cheaper than re-parametrising one per call; stages
        without state are called as they are.
        """
        stage = self.stages[s]
        if not stage.keys:
            return stage.module
        key = id(child) if child.stats else (s, child.token)
        module = self._modules.get(key)
        if module is None:
            module = copy.deepcopy(stage.module)
            state = {**self._stage_params(s, child.token), **child.stats}
            module.load_state_dict(state, assign=True)
            self._modules[key] = module
        if module.training != self.net.training:
            module.train(self.net.training)
        return module

    def _run(self, s: int, child: _Node, x: Tensor) -> Tensor:
        self.stage_runs[s] += x.shape[0]
        return self._module(s, child)(x)

    def _descend(self, node: _Node, x: Tensor, leaf: Callable[[list[int], Tensor], None]) -> None:
        if node.depth == len(self.stages):
            leaf(node.models, x)
            return
        s = node.depth
        stage = self.stages[s]
        uniform = [c.token[0] for c in node.children.values() if stage.mixable and c.token and len(set(c.token)) == 1]
        mixing = sum(0.0 < c < 1.0 for c in uniform) >= 2  # mixing costs two runs: only worth it for 2+ alphas
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

    @contextlib.contextmanager
    def _fast_math(self) -> Iterator[None]:
        """The requested precision for the evaluation pass (fp32 leaves everything as it is)."""
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        elif self.precision == "tf32" and self.device.type == "cuda":
            matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            try:
                yield
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        else:
            yield

    def _init_stats(self, node: _Node) -> None:
        """Fresh running statistics (as ``reset_running_stats``) for every node holding BatchNorm."""
        for child in node.children.values():
            names = self._stat_names[child.depth - 1]
            if names:
                params = dict(self.stages[child.depth - 1].module.named_buffers())
                child.stats = {
                    n: torch.zeros_like(params[n]) if not n.endswith("running_var") else torch.ones_like(params[n])
                    for n in names
                }
            self._init_stats(child)

    def _calibrate(self, root: _Node, inputs: Tensor, batch_size: int) -> None:
        self._init_stats(root)
        self.net.train()
        try:
            for i in range(0, len(inputs), batch_size):
                x = inputs[i : i + batch_size].to(self.device)
                self._descend(root, x, lambda _models, _out: None)
        finally:
            self.net.eval()

    @torch.no_grad()
    def evaluate(
        self,
        models: Sequence[Coefficients],
        inputs: Tensor,
        targets: Tensor,
        batch_size: int = 512,
        calibration: Tensor | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Metrics]:
        """Loss and accuracy of every model on (inputs, targets); ``calibration`` inputs for bn=reset."""
        root = self._build(models)
        if self.bn == "reset" and any(self._stat_names):
            if calibration is None or len(calibration) == 0:
                raise LwlcError("bn mode 'reset' needs training data to recompute BatchNorm statistics")
            self._calibrate(root, calibration, batch_size)
        results = [Metrics() for _ in models]

        for i in range(0, len(inputs), batch_size):
            x = inputs[i : i + batch_size].to(self.device)
            y = targets[i : i + batch_size].to(self.device)

            def leaf(ms: list[int], logits: Tensor, y: Tensor = y) -> None:
                logits, target = logits.float().flatten(0, -2), y.flatten()  # sequences: per token
                loss = F.cross_entropy(logits, target, reduction="sum").item()
                correct = int((logits.argmax(dim=1) == target).sum().item())
                for m in ms:
                    results[m].loss_sum += loss
                    results[m].correct += correct
                    results[m].count += target.numel()

            with self._fast_math():
                self._descend(root, x, leaf)
            if progress is not None:
                progress(len(x))
        self._params.clear()
        self._modules.clear()
        return results
