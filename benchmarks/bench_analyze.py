"""Time lwlc's connectivity sweep against two baselines, check they agree, count the work.

The full default sweep (single layers with rest from A and from B, cumulative front and back,
full model; 11 alphas; one split) on random CIFAR-shaped data, three ways, in one run:
  (a) the authors' procedure: one interpolated model at a time, load_state_dict each time, data
      through a DataLoader on every pass, the endpoints re-evaluated for every path;
  (b) a tight loop: each distinct model once, data already in memory;
  (c) lwlc's engine (prefix sharing + output mixing).
All three must agree to 1e-5. Multiply-adds of Linear/Conv layers are counted per method (the
ratio (b)/(c) is the work-saving bound); GFLOP/s and the machine's float32 matmul peak put the
times in context. Results are appended to benchmarks/RESULTS.md.

    python benchmarks/bench_analyze.py --samples 2048            # the issue's setting
    python benchmarks/bench_analyze.py --samples 128 --width 32  # what fits a 2-core CPU quickly
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lwlc.evaluation import Evaluator, model_stages
from lwlc.interpolation import coefficients, default_alphas, make_paths
from lwlc.layers import default_groups
from lwlc.models import VGG, ResNet18
from lwlc.sweep import sweep

PLANS = ["full", "single", "cumulative_front", "cumulative_back"]


def build(name: str, width: int) -> nn.Module:
    if name == "vgg11_bn":
        return VGG(depth=11, batch_norm=True, width=width)
    if name == "resnet18":
        return ResNet18(norm="batch", width=width)
    raise SystemExit(f"unknown model {name}")


def macs_per_stage(model: nn.Module, stages, example: torch.Tensor) -> list[int]:
    """Multiply-adds per sample of the Linear/Conv layers inside each stage."""
    counts: dict[nn.Module, int] = {}

    def hook(m: nn.Module, inp, out) -> None:
        if isinstance(m, nn.Conv2d):
            counts[m] = out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            counts[m] = m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(example[:1])
    for h in handles:
        h.remove()
    return [sum(counts.get(m, 0) for m in st.module.modules()) for st in stages]


def state_at(a, b, coeffs, keys) -> dict:
    out = {}
    for k, c in zip(keys, coeffs):
        out[k] = a[k] if c == 0 else b[k] if c == 1 else (1 - c) * a[k] + c * b[k]
    return out


def eval_loader(net: nn.Module, loader) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            total += F.cross_entropy(net(x), y, reduction="sum").item()
            n += len(y)
    return total / n


def authors(model, a, b, paths, alphas, x, y, batch) -> tuple[dict, int]:
    """(a): for every path, endpoints then each alpha, each model rebuilt, loaded, run through a DataLoader."""
    keys = list(a)
    floats = frozenset(k for k in keys if a[k].is_floating_point())
    net = copy.deepcopy(model).eval()
    out, evals = {}, 0
    for p in paths:
        for sd in (a, b):  # endpoints for the path's reference
            net.load_state_dict(sd)
            eval_loader(net, DataLoader(TensorDataset(x, y), batch_size=batch))
            evals += 1
        for t in alphas:
            c = coefficients(p, t, keys, floats)
            net.load_state_dict(state_at(a, b, c, keys))
            out[(p, t)] = eval_loader(net, DataLoader(TensorDataset(x, y), batch_size=batch))
            evals += 1
    return out, evals


def tight(model, a, b, paths, alphas, x, y, batch) -> tuple[dict, int]:
    """(b): every distinct model once, batches pre-cut in memory, functional weights."""
    keys = list(a)
    floats = frozenset(k for k in keys if a[k].is_floating_point())
    net = copy.deepcopy(model).eval()
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]
    seen: dict[tuple, float] = {}
    out = {}
    with torch.no_grad():
        for p in paths:
            for t in alphas:
                c = coefficients(p, t, keys, floats)
                if c not in seen:
                    sd = state_at(a, b, c, keys)
                    total = sum(F.cross_entropy(torch.func.functional_call(net, sd, (bx,)), by, reduction="sum").item() for bx, by in batches)
                    seen[c] = total / len(x)
                out[(p, t)] = seen[c]
    return out, len(seen)


def matmul_peak() -> float:
    m = torch.randn(2048, 2048)
    m @ m
    t = time.perf_counter()
    for _ in range(5):
        m @ m
    return 5 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(name: str, args) -> str:
    torch.manual_seed(0)
    model = build(name, args.width)
    torch.manual_seed(1)
    other = build(name, args.width)
    a, b = model.state_dict(), other.state_dict()
    g = torch.Generator().manual_seed(2)
    for sd in (a, b):  # realistic, distinct BatchNorm statistics
        for k, v in sd.items():
            if k.endswith("running_mean"):
                sd[k] = 0.1 * torch.randn(v.shape, generator=g)
            elif k.endswith("running_var"):
                sd[k] = 0.5 + torch.rand(v.shape, generator=g)
    x = torch.randn(args.samples, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.samples,), generator=g)
    alphas = default_alphas(args.alphas)
    groups = default_groups(model, x[:2])
    paths = make_paths(groups, PLANS)

    t0 = time.perf_counter()
    ev = Evaluator(model, a, b)
    res = sweep(ev, paths, alphas, {"test": (x, y)}, batch_size=args.batch, chunk_size=len(paths))
    t_ours = time.perf_counter() - t0
    ours = {}
    for p in paths:
        rows = [r for r in res.curves if (r["plan"], r["group"], r["rest_from"]) == (p.plan, p.group, p.rest_from)]
        ours.update({(p, r["alpha"]): r["loss"] for r in rows})

    t0 = time.perf_counter()
    loop, distinct = tight(model, a, b, paths, alphas, x, y, args.batch)
    t_tight = time.perf_counter() - t0
    if args.skip_authors:
        auth, evals, t_auth = loop, 0, float("nan")
    else:
        t0 = time.perf_counter()
        auth, evals = authors(model, a, b, paths, alphas, x, y, args.batch)
        t_auth = time.perf_counter() - t0

    dev = max(max(abs(ours[k] - loop[k]), abs(ours[k] - auth[k])) for k in ours)
    per_stage = macs_per_stage(ev.net, ev.stages, x)
    full = sum(per_stage)
    macs_ours = sum(r * m for r, m in zip(ev.stage_runs, per_stage))
    macs_tight = distinct * full * args.samples
    macs_auth = evals * full * args.samples
    bound = macs_tight / macs_ours
    speed_b = t_tight / t_ours
    lines = [
        f"| {name} (width {args.width}) | {len(groups)} | {len(paths)} | {args.samples} | "
        f"{t_auth:.1f} | {t_tight:.1f} | {t_ours:.1f} | {t_auth / t_ours:.2f}x | {speed_b:.2f}x | {bound:.2f}x | "
        f"{100 * speed_b / bound:.0f}% | {macs_auth / 1e9:.0f} / {macs_tight / 1e9:.0f} / {macs_ours / 1e9:.0f} | "
        f"{2 * macs_tight / t_tight / 1e9:.0f} / {2 * macs_ours / t_ours / 1e9:.0f} | {dev:.1e} |"
    ]
    print(lines[0], flush=True)
    if dev > 1e-5:
        raise SystemExit(f"methods disagree by {dev:.2e} > 1e-5")
    return lines[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vgg11_bn,resnet18")
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--alphas", type=int, default=11)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--skip-authors", action="store_true", help="skip baseline (a), the slowest")
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = p.parse_args()
    peak = matmul_peak()
    rows = [run(name, args) for name in args.models.split(",")]
    header = [
        "",
        f"## bench_analyze: sweep speed ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, CPU; "
        f"float32 matmul peak {peak:.0f} GFLOP/s (2048x2048). Full default sweep ({', '.join(PLANS)}; "
        f"rest from A and B), {args.alphas} alphas, batch {args.batch}, random CIFAR-shaped data.",
        "Times in seconds: (a) authors' procedure, (b) tight loop over distinct models, (c) lwlc. "
        "Bound = multiply-adds (b) / (c), the speed-up that doing less work allows; 'of bound' = achieved (b)/(c) over bound. "
        "GMAC column: (a) / (b) / (c); GFLOP/s: (b) / (c). Max dev: largest loss difference between methods.",
        "",
        "| model | groups | paths | samples | (a) s | (b) s | (c) s | vs (a) | vs (b) | bound | of bound | GMAC | GFLOP/s | max dev |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with open(args.results, "a") as f:
        f.write("\n".join(header + rows) + "\n")


if __name__ == "__main__":
    main()
