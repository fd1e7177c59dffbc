"""Time lwlc's connectivity sweep against two baselines, check they agree, count the work.

The full default sweep (single layers with rest from A and from B, cumulative front and back,
full model; 11 alphas; one split) on random CIFAR-shaped data, three ways, in one run:
  (a) the authors' procedure: one interpolated model at a time, load_state_dict each time, data
      through a DataLoader on every pass, the endpoints re-evaluated for every path;
  (b) a tight loop: each distinct model once, data already in memory;
  (c) lwlc's engine (prefix sharing + output mixing).
All three must agree to 1e-5. Multiply-adds of Linear/Conv layers are counted per method (the
ratio (b)/(c) is the work-saving bound); GFLOP/s and the machine's float32 matmul peak put the
times in context. ``--precisions tf32,bf16`` also times (c) in those fast modes and reports their
largest deviation from its float32 result. Each method is warmed up first (kernel selection,
allocator), so the first timed method pays no start-up cost. On a GPU (``--device cuda``) every
method runs in true float32 (TF32 off), (b) and (c) with the data already on the device and (a)
through a DataLoader of CPU tensors, as the authors' scripts do. Results are appended to
benchmarks/RESULTS.md.

    python benchmarks/bench_analyze.py --samples 2048            # the issue's setting
    python benchmarks/bench_analyze.py --samples 128 --width 32  # what fits a 2-core CPU quickly
    python benchmarks/bench_analyze.py --device cuda --samples 10000 --precisions tf32,bf16
    python benchmarks/bench_analyze.py --threads 1 --models tv_resnet18 --samples 64 --batch 64
    python benchmarks/bench_analyze.py --threads 1 --models pythia --width 192 --vocab 4096 --samples 4 --batch 4

Models: lwlc's own ``vgg11_bn`` and ``resnet18`` (their ``stages()``), and two it did not write,
whose stages the engine finds itself (``lwlc.core.stages.find_stages``; the table says how many and
how): ``tv_resnet18``, torchvision's resnet18 with 10 classes on 32x32 inputs (fx-graph cuts), and
``pythia``, a GPT-NeoX with Pythia-160m's layout (12 blocks, 12 heads, 4x MLP, rotary on a quarter
of each head, parallel residual, untied head) at ``--width`` hidden units, built locally from a
``GPTNeoXConfig`` (no download) and wrapped as ``lwlc.formats.hf.CausalLM``, on random token
sequences of ``--seq-len`` tokens (``--samples`` sequences; the loss is per token).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lwlc.core.engine import Evaluator
from lwlc.core.interpolation import coefficients, default_alphas, make_paths
from lwlc.core.layers import default_groups
from lwlc.core.stages import find_stages
from lwlc.core.sweep import sweep
from lwlc.models import VGG, ResNet18

PLANS = ["full", "single", "cumulative_front", "cumulative_back"]
MODELS = ("vgg11_bn", "resnet18", "tv_resnet18", "pythia")
PYTHIA_160M = {"num_hidden_layers": 12, "num_attention_heads": 12, "hidden_size": 768}


def pythia_folder(width: int, vocab: int, seq_len: int) -> str:
    """A local folder holding only the config.json of a GPT-NeoX with Pythia-160m's layout at
    ``width`` hidden units (Pythia-160m: 768, 12 heads, 12 blocks), for ``CausalLM``."""
    from transformers import GPTNeoXConfig

    heads = PYTHIA_160M["num_attention_heads"]
    if width % heads:
        raise SystemExit(f"--width {width} must be a multiple of {heads} heads for pythia")
    config = GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=width,
        num_hidden_layers=PYTHIA_160M["num_hidden_layers"],
        num_attention_heads=heads,
        intermediate_size=4 * width,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        max_position_embeddings=max(seq_len, 64),
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
    )
    folder = tempfile.mkdtemp(prefix="bench_pythia_")
    config.save_pretrained(folder)
    return folder


def build(name: str, args) -> nn.Module:
    if name == "vgg11_bn":
        return VGG(depth=11, batch_norm=True, width=args.width)
    if name == "resnet18":
        return ResNet18(norm="batch", width=args.width)
    if name == "tv_resnet18":
        from torchvision.models import resnet18

        return resnet18(num_classes=10)
    if name == "pythia":
        from lwlc.formats.hf import CausalLM

        if not getattr(args, "pythia_dir", None):
            args.pythia_dir = pythia_folder(args.width, args.vocab, args.seq_len)
        return CausalLM(args.pythia_dir)
    raise SystemExit(f"unknown model {name}; known: {', '.join(MODELS)}")


def fake_data(name: str, args, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs and targets: CIFAR-shaped images with 10 classes, or token sequences whose
    targets are the next tokens."""
    if name == "pythia":
        tokens = torch.randint(0, args.vocab, (args.samples, args.seq_len + 1), generator=g)
        return tokens[:, :-1], tokens[:, 1:]
    x = torch.randn(args.samples, 3, 32, 32, generator=g)
    return x, torch.randint(0, 10, (args.samples,), generator=g)


def label(name: str, args) -> str:
    if name == "tv_resnet18":
        return "torchvision resnet18 (32x32)"
    if name == "pythia":
        return f"GPT-NeoX, Pythia-160m layout (width {args.width}, vocab {args.vocab}, {args.seq_len} tokens)"
    return f"{name} (width {args.width})"


def loss_sum(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Summed cross-entropy per label (per token for a language model)."""
    return F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="sum").item()


def macs_per_stage(model: nn.Module, stages, example: torch.Tensor) -> list[int]:
    """Multiply-adds per sample of the Linear/Conv layers inside each stage."""
    counts: dict[nn.Module, int] = {}

    def hook(m: nn.Module, inp, out) -> None:  # out is one sample's (batch of 1)
        if isinstance(m, nn.Conv2d):
            counts[m] = out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):  # per token of a sequence
            counts[m] = out.numel() * m.in_features

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


def eval_loader(net: nn.Module, loader, device: torch.device) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            total += loss_sum(net(x), y)
            n += y.numel()
    return total / n


def authors(model, a, b, paths, alphas, x, y, batch) -> tuple[dict, int]:
    """(a): for every path, endpoints then each alpha, each model rebuilt, loaded, run through a DataLoader."""
    keys = list(a)
    floats = frozenset(k for k in keys if a[k].is_floating_point())
    device = next(iter(a.values())).device
    x, y = x.cpu(), y.cpu()
    net = copy.deepcopy(model).to(device).eval()
    out, evals = {}, 0
    for p in paths:
        for sd in (a, b):  # endpoints for the path's reference
            net.load_state_dict(sd)
            eval_loader(net, DataLoader(TensorDataset(x, y), batch_size=batch), device)
            evals += 1
        for t in alphas:
            c = coefficients(p, t, keys, floats)
            net.load_state_dict(state_at(a, b, c, keys))
            out[(p, t)] = eval_loader(net, DataLoader(TensorDataset(x, y), batch_size=batch), device)
            evals += 1
    return out, evals


def tight(model, a, b, paths, alphas, x, y, batch) -> tuple[dict, int]:
    """(b): every distinct model once, batches pre-cut in memory, functional weights."""
    keys = list(a)
    floats = frozenset(k for k in keys if a[k].is_floating_point())
    net = copy.deepcopy(model).to(x.device).eval()
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]
    seen: dict[tuple, float] = {}
    out = {}
    with torch.no_grad():
        for p in paths:
            for t in alphas:
                c = coefficients(p, t, keys, floats)
                if c not in seen:
                    sd = state_at(a, b, c, keys)
                    total = sum(loss_sum(torch.func.functional_call(net, sd, (bx,)), by) for bx, by in batches)
                    seen[c] = total / y.numel()
                out[(p, t)] = seen[c]
    return out, len(seen)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    """Measured GFLOP/s of an n x n matmul (the best of 5 after a warm-up)."""
    m = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(6):
        sync(device)
        t = time.perf_counter()
        m @ m
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{cpu_name()}, {torch.get_num_threads()} threads, CPU"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def curves(res, paths) -> dict:
    """{(path, alpha): loss} from a sweep result."""
    by_path = {(p.plan, p.group, p.rest_from): p for p in paths}
    return {(by_path[(r["plan"], r["group"], r["rest_from"])], r["alpha"]): r["loss"] for r in res.curves}


def timed(fn, device: torch.device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def run(name: str, args) -> tuple[str, list[str]]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(name, args)
    torch.manual_seed(1)
    other = build(name, args)
    a, b = model.state_dict(), other.state_dict()
    g = torch.Generator().manual_seed(2)
    for sd in (a, b):  # realistic, distinct BatchNorm statistics
        for k, v in sd.items():
            if k.endswith("running_mean"):
                sd[k] = 0.1 * torch.randn(v.shape, generator=g)
            elif k.endswith("running_var"):
                sd[k] = 0.5 + torch.rand(v.shape, generator=g)
    x, y = fake_data(name, args, g)
    alphas = default_alphas(args.alphas)
    groups = default_groups(model, x[:2])
    paths = make_paths(groups, PLANS)
    a, b = {k: v.to(device) for k, v in a.items()}, {k: v.to(device) for k, v in b.items()}
    x, y = x.to(device), y.to(device)

    def engine(precision: str = "fp32", subset: int | None = None):
        ev = Evaluator(model, a, b, device=device, precision=precision)
        data = {"test": (x[:subset], y[:subset])}
        use = paths[:3] if subset else paths
        return ev, sweep(ev, use, alphas, data, batch_size=args.batch, chunk_size=len(use))

    # warm-up: every method once on a few paths and one batch (kernels, cuDNN plans, allocator)
    # Warm-up: the engine's whole sweep once (it is the cheapest) and the baselines on a few models.
    # A process's first pass over large tensors pays page faults and kernel selection (on a CPU a
    # first sweep was seen to take 1.3-4x its second): without this the first timed method pays it.
    _, t_warm = timed(engine if args.warm_up == "full" else lambda: engine(subset=args.batch), device)
    tight(model, a, b, paths[:3], alphas[:2], x[: args.batch], y[: args.batch], args.batch)
    authors(model, a, b, paths[:1], alphas[:1], x[: args.batch], y[: args.batch], args.batch)
    print(f"{name}: warm-up done ({args.warm_up}, {t_warm:.1f} s)", flush=True)

    (ev, res), t_ours = timed(engine, device)
    print(f"{name}: (c) {t_ours:.1f} s", flush=True)
    ours = curves(res, paths)
    fast_runs = []
    for precision in args.precisions:
        (_, res_fast), t_fast = timed(lambda p=precision: engine(p), device)
        dev_fast = max(abs(v - ours[k]) for k, v in curves(res_fast, paths).items())
        fast_runs.append((precision, t_fast, dev_fast))
        print(f"{name}: (c) {precision} {t_fast:.1f} s, max dev {dev_fast:.1e}", flush=True)

    if args.skip_tight:
        loop, distinct, t_tight = ours, len({coefficients(p, t, ev.keys, ev.float_keys) for p in paths for t in alphas}), float("nan")
    else:
        (loop, distinct), t_tight = timed(lambda: tight(model, a, b, paths, alphas, x, y, args.batch), device)
        print(f"{name}: (b) {t_tight:.1f} s", flush=True)
    if args.skip_authors:
        auth, evals, t_auth = loop, 0, float("nan")
    else:
        (auth, evals), t_auth = timed(lambda: authors(model, a, b, paths, alphas, x, y, args.batch), device)

    dev = max(max(abs(ours[k] - loop[k]), abs(ours[k] - auth[k])) for k in ours)
    per_stage = macs_per_stage(ev.net, ev.stages, x)
    full = sum(per_stage)
    macs_ours = sum(r * m for r, m in zip(ev.stage_runs, per_stage))
    macs_tight = distinct * full * args.samples
    macs_auth = evals * full * args.samples
    bound = macs_tight / macs_ours
    speed_b = t_tight / t_ours
    rate_b, rate_c = 2 * macs_tight / t_tight / 1e9, 2 * macs_ours / t_ours / 1e9
    peak = args.peaks["fp32"]
    row = (
        f"| {label(name, args)} | {len(ev.stages)} ({find_stages(ev.net).how}) | {len(groups)} | {len(paths)} | "
        f"{args.samples} | {shown(t_auth, '.1f')} | {shown(t_tight, '.1f')} | {t_ours:.1f} | "
        f"{shown(t_auth / t_ours, '.2f', 'x')} | {shown(speed_b, '.2f', 'x')} | "
        f"{bound:.2f}x | {shown(100 * speed_b / bound, '.0f', '%')} | "
        f"{shown(macs_auth / 1e9 if evals else math.nan, '.0f')} / {macs_tight / 1e9:.0f} / {macs_ours / 1e9:.0f} | "
        f"{shown(rate_b, '.0f')} / {rate_c:.0f} | {shown(100 * rate_b / peak, '.0f', '%')} / {100 * rate_c / peak:.0f}% | {dev:.1e} |"
    )
    print(row, flush=True)
    fast = []
    for precision, t_fast, dev_fast in fast_runs:
        rate = 2 * macs_ours / t_fast / 1e9
        of_peak = f", {100 * rate / args.peaks[precision]:.0f}% of the {precision} peak" if precision in args.peaks else ""
        fast.append(
            f"{precision} {t_fast:.1f} s ({t_ours / t_fast:.2f}x fp32 (c), {rate:.0f} GFLOP/s{of_peak}, "
            f"{100 * (t_tight / t_fast) / bound:.0f}% of the bound against fp32 (b), max dev {dev_fast:.1e})"
        )
    notes = [f"- {label(name, args)}: fast modes of (c): " + "; ".join(fast)] if fast else []
    for line in notes:
        print(line, flush=True)
    if dev > 1e-5:
        raise SystemExit(f"methods disagree by {dev:.2e} > 1e-5")
    return row, notes


def shown(value: float, spec: str, unit: str = "") -> str:
    """``value`` in ``spec`` with its unit, or "-" for a skipped baseline (nan)."""
    return "-" if math.isnan(value) else format(value, spec) + unit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vgg11_bn,resnet18", help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--alphas", type=int, default=11)
    p.add_argument("--vocab", type=int, default=50304, help="pythia: vocabulary (Pythia's 50304)")
    p.add_argument("--seq-len", type=int, default=32, help="pythia: tokens per sequence")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--skip-authors", action="store_true", help="skip baseline (a), the slowest")
    p.add_argument("--skip-tight", action="store_true", help="skip baseline (b) too: time lwlc alone")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1: steadier on a shared machine)")
    p.add_argument("--warm-up", choices=["full", "short"], default="full", help="(c)'s untimed warm-up sweep")
    p.add_argument("--precisions", default="", help="fast modes of (c) to time too, e.g. tf32,bf16")
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = p.parse_args()
    args.precisions = [q for q in args.precisions.split(",") if q]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":  # baselines and (c) in true float32; the fast modes are asked for
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    load_start = os.getloadavg()[0]
    args.peaks = {"fp32": matmul_peak(device, n=8192 if device.type == "cuda" else 2048)}
    peaks = f"float32 matmul peak {args.peaks['fp32']:.0f} GFLOP/s"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        args.peaks["tf32"] = matmul_peak(device, n=8192)
        torch.backends.cuda.matmul.allow_tf32 = False
        args.peaks["bf16"] = matmul_peak(device, torch.bfloat16, 8192)
        peaks += f", TF32 {args.peaks['tf32']:.0f}, bf16 {args.peaks['bf16']:.0f}"
    results = [run(name, args) for name in args.models.split(",")]
    rows = [row for row, _ in results]
    notes = [line for _, lines in results for line in lines]
    header = [
        "",
        f"## bench_analyze: sweep speed ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {device_name(device)}, torch {torch.__version__}; "
        f"{peaks}. Full default sweep ({', '.join(PLANS)}; "
        f"rest from A and B), {args.alphas} alphas, batch {args.batch}, random CIFAR-shaped data "
        f"(token sequences for GPT-NeoX). Load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs share the machine when above 0).",
        "Times in seconds: (a) authors' procedure, (b) tight loop over distinct models, (c) lwlc. "
        "Bound = multiply-adds (b) / (c), the speed-up that doing less work allows; 'of bound' = achieved (b)/(c) over bound. "
        "GMAC column: (a) / (b) / (c) (Linear and Conv multiply-adds; attention's own products are not counted); "
        "GFLOP/s and of peak: (b) / (c), against the float32 matmul peak. Stages: how many the engine runs and how "
        "they were found. Max dev: largest loss difference between methods.",
        "",
        "| model | stages | groups | paths | samples | (a) s | (b) s | (c) s | vs (a) | vs (b) | bound | of bound | GMAC | GFLOP/s | of peak | max dev |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with open(args.results, "a") as f:
        f.write("\n".join(header + rows + ([""] + notes if notes else [])) + "\n")


if __name__ == "__main__":
    main()
