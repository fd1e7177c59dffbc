"""``lwlc analyze``: layer-wise barriers between two checkpoints, written to a results directory.

Parsing and file handling only: the measurement itself is ``lwlc.sweep`` over the engine.
Results are written as each chunk of paths finishes (atomically), so an interrupted run keeps
its finished paths and ``--resume`` continues without recomputing them.
"""

from __future__ import annotations

import platform
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Any

import torch
from torch import nn

from lwlc import layers
from lwlc.checkpoints import Checkpoint, build_model, instantiate, read_checkpoint
from lwlc.errors import LwlcError
from lwlc.evaluation import Evaluator
from lwlc.interpolation import PLANS, check_alphas, default_alphas, make_paths
from lwlc.io import read_csv, write_csv, write_json
from lwlc.sweep import BARRIER_COLUMNS, CURVE_COLUMNS, Rows, path_key, sweep

DEFAULT_PLANS = "full,single,cumulative_front,cumulative_back"


def build_parser() -> Any:
    """The analyze argument parser (jsonargparse, like the rest of lwlc's CLI)."""
    from jsonargparse import ActionYesNo, ArgumentParser
    from lightning.pytorch import LightningDataModule

    p = ArgumentParser(prog="lwlc analyze", description="Layer-wise linear connectivity of two networks.", exit_on_error=False)
    p.add_argument("--ckpt", type=str | None, default=None, help="a paired checkpoint from lwlc fit: compares its members A and B")
    p.add_argument("--ckpt-a", type=str | None, default=None, help="checkpoint (or state dict / .safetensors) of model A")
    p.add_argument("--ckpt-b", type=str | None, default=None, help="checkpoint (or state dict / .safetensors) of model B")
    p.add_subclass_arguments(nn.Module, "model", required=False, help="model class (default: from the checkpoint's config)")
    p.add_subclass_arguments(LightningDataModule, "data", required=False, help="data module (default: from the checkpoint's config)")
    p.add_argument("--plans", type=str, default=DEFAULT_PLANS, help=f"comma-separated plans from {', '.join(PLANS)}")
    p.add_argument("--group", type=list[str], default=[], help="merge the layers matching a glob (or re:regex) into one group; repeatable")
    p.add_argument("--group-depth", type=int | None, default=None, help="group layers by the first N parts of their module path")
    p.add_argument("--custom", type=list[str], default=[], help="custom plan set 'name=pattern,pattern'; repeatable")
    p.add_argument("--alphas", type=str | None, default=None, help="comma-separated alphas in [0,1] including 0 and 1 (e.g. 0,0.5,1)")
    p.add_argument("--num-alphas", type=int, default=11, help="evenly spaced alphas when --alphas is not given")
    p.add_argument("--splits", type=str, default="test", help="comma-separated splits: test, val, train")
    p.add_argument("--rest-from", type=str, default="a,b", help="where non-interpolated layers come from: a, b or a,b")
    p.add_argument("--bn", type=str, default="keep", help="BatchNorm statistics: keep (interpolate) or reset (recompute on train data)")
    p.add_argument("--bn-samples", type=int, default=2048, help="training samples used to recompute BatchNorm statistics")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--chunk-size", type=int, default=16, help="paths evaluated together (results are saved after each chunk)")
    p.add_argument("--device", type=str, default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--max-samples", type=int | None, default=None, help="evaluate on the first N samples of each split")
    p.add_argument("--out", type=str | None, default=None, help="results directory (default: next to the checkpoint)")
    p.add_argument("--overwrite", action=ActionYesNo, default=False, help="replace an existing non-empty results directory")
    p.add_argument("--resume", action=ActionYesNo, default=False, help="continue an interrupted run in --out without recomputing")
    p.add_argument("--list-layers", action=ActionYesNo, default=False, help="print the layers/groups and exit")
    p.add_argument("--plots", action=ActionYesNo, default=True, help="draw PNG figures of the results")
    p.add_argument("--trust-class-paths", action=ActionYesNo, default=False, help="allow model/data classes outside lwlc/torch/torchvision")
    return p


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LwlcError(f"--device {name} requested but CUDA is not available on this machine: use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise LwlcError(f"unknown --device {name!r}: use cpu, cuda, cuda:N or auto") from None


def _members(args: Any) -> tuple[dict, dict, list[Checkpoint], dict[str, Any] | None]:
    """(state A, state B, the checkpoints read, the model config found in them)."""
    if args.ckpt and (args.ckpt_a or args.ckpt_b):
        raise LwlcError("give either --ckpt PAIR or --ckpt-a A --ckpt-b B, not both")
    if args.ckpt:
        ck = read_checkpoint(args.ckpt)
        if not ck.paired:
            raise LwlcError(f"{args.ckpt} holds a single network, not a pair: use --ckpt-a {args.ckpt} --ckpt-b OTHER")
        return ck.members["a"], ck.members["b"], [ck], ck.model_config
    if not (args.ckpt_a and args.ckpt_b):
        raise LwlcError("nothing to compare: give --ckpt PAIR.ckpt or both --ckpt-a A.ckpt and --ckpt-b B.ckpt")
    cks = [read_checkpoint(args.ckpt_a), read_checkpoint(args.ckpt_b)]
    for ck, flag in zip(cks, ("--ckpt-a", "--ckpt-b")):
        if ck.paired:
            raise LwlcError(f"{flag} {ck.path} is a paired checkpoint (two networks): use --ckpt {ck.path} to compare its members")
    return cks[0].members["model"], cks[1].members["model"], cks, cks[0].model_config or cks[1].model_config


def _config(value: Any) -> dict[str, Any] | None:
    """A jsonargparse subclass value (Namespace) as a plain ``{class_path, init_args}`` dict."""
    if value is None:
        return None
    d = value.as_dict() if hasattr(value, "as_dict") else dict(value)
    return d if d.get("class_path") else None


def _out_dir(args: Any, cks: Sequence[Checkpoint]) -> FsPath:
    if args.out:
        out = FsPath(args.out)
    else:
        src = FsPath(cks[0].path).resolve().parent
        out = (src.parent if src.name == "checkpoints" else src) / "analysis"
    if out.exists() and not out.is_dir():
        raise LwlcError(f"--out {out} is a file, not a directory: choose another path")
    if out.exists() and any(out.iterdir()) and not (args.overwrite or args.resume):
        raise LwlcError(f"--out {out} exists and is not empty: pass --overwrite to replace it or --resume to continue it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise LwlcError(f"cannot write to --out {out} ({err.strerror}): choose a writable directory") from None
    if args.overwrite and not args.resume:
        for name in ("curves.csv", "barriers.csv", "summary.json"):
            (out / name).unlink(missing_ok=True)
    return out


def _groups(args: Any, model: nn.Module, example: torch.Tensor) -> tuple[list[layers.Group], dict[str, list[layers.Group]]]:
    groups = layers.default_groups(model, example)
    if args.group_depth is not None:
        groups = layers.group_by_depth(groups, args.group_depth)
    if args.group:
        groups = layers.regroup(groups, args.group)
    custom: dict[str, list[layers.Group]] = {}
    for spec in args.custom:
        name, _, patterns = spec.partition("=")
        if not patterns:
            raise LwlcError(f"--custom {spec!r} must look like 'name=pattern,pattern'")
        custom[name.strip()] = layers.select(groups, _csv_list(patterns))
    return groups, custom


def _print_layers(groups: Sequence[layers.Group], state: dict[str, torch.Tensor]) -> None:
    width = max(len(g.name) for g in groups)
    print(f"{'#':>3}  {'group':<{width}}  {'tensors':>7}  {'numel':>10}")
    for i, g in enumerate(groups):
        numel = sum(state[k].numel() for k in g.keys)
        print(f"{i:>3}  {g.name:<{width}}  {len(g.keys):>7}  {numel:>10}")


def print_table(barriers: Rows, split: str) -> None:
    """A readable table of path barriers per group (loss in nats, error in percentage points)."""
    rows = [r for r in barriers if r["split"] == split and r["reference"] == "path"]
    models = {path_key(r): r for r in barriers if r["split"] == split and r["reference"] == "models"}
    if not rows:
        return
    width = max(len(str(r["group"])) for r in rows)
    print(f"\nBarriers on {split} (path reference; 'vs models' = against the line between A and B)")
    print(f"{'plan':<17} {'group':<{width}} {'rest':<4} {'loss':>9} {'error pp':>9} {'loss vs models':>15}")
    for r in rows:
        m = models.get(path_key(r), {})
        print(
            f"{r['plan']:<17} {r['group']:<{width}} {r['rest_from']:<4} {float(r['loss_barrier']):>9.4f} "
            f"{100 * float(r['error_barrier']):>9.2f} {float(m.get('loss_barrier', float('nan'))):>15.4f}"
        )


def describe_pairing(cks: Sequence[Checkpoint]) -> str:
    """How the two networks were made, as recorded by ``lwlc fit`` (or 'unknown' for other files)."""
    if len(cks) == 1 and cks[0].pairing:
        p = cks[0].pairing
        return ", ".join(f"{k}: {v}" for k, v in p.items())
    return "two separate checkpoints (how they were trained is not recorded in them)"


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that finished results are kept."""


def run(argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the analysis; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except Exception as err:  # jsonargparse's ArgumentError and type errors
        raise LwlcError(f"{str(err).strip().splitlines()[0]} (see lwlc analyze --help)") from None
    started = time.time()
    state_a, state_b, cks, ck_model = _members(args)
    model_cfg = _config(args.model) or ck_model
    if model_cfg is None:
        raise LwlcError("the checkpoint records no model config (plain state dict?): pass --model CLASS, e.g. --model lwlc.models.MLP")
    model = build_model(model_cfg, trust=args.trust_class_paths or _config(args.model) is not None)
    layers.check_compatible(state_a, state_b)
    missing = set(model.state_dict()) ^ set(state_a)
    if missing:
        raise LwlcError(f"the model config does not match the checkpoint (e.g. key {sorted(missing)[0]!r}): pass the right --model")
    layers.check_finite(state_a, "A")
    layers.check_finite(state_b, "B")
    model.load_state_dict(state_a)

    data_cfg = _config(args.data) or next((ck.data_config for ck in cks if ck.data_config), None)
    if data_cfg is None:
        raise LwlcError("the checkpoint records no data config: pass --data CLASS, e.g. --data lwlc.data.DigitsDataModule")
    from lightning.pytorch import LightningDataModule

    datamodule = instantiate(data_cfg, LightningDataModule, "data", trust=args.trust_class_paths or _config(args.data) is not None)
    splits = _csv_list(args.splits)
    bad = [s for s in splits if s not in ("train", "val", "test")]
    if bad:
        raise LwlcError(f"unknown split {bad[0]!r}: choose from train, val, test")
    data = {s: datamodule.tensors(s, args.max_samples) for s in splits}
    example = next(iter(data.values()))[0][:2]
    groups, custom = _groups(args, model, example)
    if args.list_layers:
        _print_layers(groups, state_a)
        return 0

    plans = _csv_list(args.plans)
    if custom and "custom" not in plans:
        plans.append("custom")
    rest_from = _csv_list(args.rest_from)
    alphas = check_alphas([float(t) for t in _csv_list(args.alphas)] if args.alphas else default_alphas(args.num_alphas))
    paths = make_paths(groups, plans, rest_from, custom)
    device = _device(args.device)
    evaluator = Evaluator(model, state_a, state_b, device=device, bn=args.bn)
    calibration = None
    if args.bn == "reset" and evaluator.has_batchnorm():
        calibration = datamodule.tensors("train", args.bn_samples)[0]
    out = _out_dir(args, cks)

    curves: Rows = []
    barriers: Rows = []
    if args.resume and (out / "curves.csv").exists() and (out / "barriers.csv").exists():
        curves, barriers = read_csv(out / "curves.csv"), read_csv(out / "barriers.csv")
        done = {path_key(r) for r in barriers if r["split"] == splits[-1]}
        todo = [p for p in paths if (p.plan, p.group, p.rest_from) not in done]
        print(f"resuming: {len(paths) - len(todo)} of {len(paths)} paths already in {out}", file=sys.stderr)
        paths = todo

    summary: dict[str, Any] = {
        "checkpoints": [{"path": ck.path, "sha256": ck.sha256, "pairing": ck.pairing} for ck in cks],
        "members": "a and b of one paired checkpoint" if args.ckpt else "ckpt_a and ckpt_b",
        "pairing": describe_pairing(cks),
        "model": model_cfg,
        "data": data_cfg,
        "layers": [{"name": g.name, "keys": list(g.keys)} for g in groups],
        "alphas": alphas,
        "options": {k: (v if not hasattr(v, "as_dict") else v.as_dict()) for k, v in vars(args).items() if k not in ("model", "data")},
        "samples": {s: len(t[1]) for s, t in data.items()},
        "bn_calibration_samples": 0 if calibration is None else len(calibration),
        "device": str(device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "lwlc": _version()},
        "status": "running",
    }
    write_json(out / "summary.json", summary)

    def save(new_curves: Rows, new_barriers: Rows) -> None:
        curves.extend(new_curves)
        barriers.extend(new_barriers)
        write_csv(out / "curves.csv", curves, CURVE_COLUMNS)
        write_csv(out / "barriers.csv", barriers, BARRIER_COLUMNS)

    def on_term(_signum: int, _frame: object) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(paths), desc="paths", unit="path", disable=not paths, file=sys.stderr)
    try:
        result = sweep(
            evaluator, paths, alphas, data, calibration=calibration, batch_size=args.batch_size,
            chunk_size=args.chunk_size, on_rows=save, progress=bar.update,
        )
    except (KeyboardInterrupt, _Terminated):
        bar.close()
        summary["status"] = "interrupted"
        write_json(out / "summary.json", summary)
        print(
            f"lwlc: interrupted: results of finished paths are in {out}; rerun the same command with --resume to finish",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    bar.close()
    summary.update(status="complete", endpoints=result.endpoints, wall_time_s=round(time.time() - started, 3))
    write_json(out / "summary.json", summary)
    if args.plots:
        _plot(out, curves, barriers)
    print(f"\npair: {describe_pairing(cks)}")
    for split in splits:
        print_table(barriers, split)
    print(f"\nresults: {out}/curves.csv, {out}/barriers.csv, {out}/summary.json")
    return 0


def _plot(out: FsPath, curves: Rows, barriers: Rows) -> None:
    """Draw the analysis figures when the plot module is available (it needs seaborn)."""
    try:
        from lwlc import plots
    except ImportError:
        return
    plots.save_analysis_figures(out, curves, barriers)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lwlc")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point used by ``lwlc analyze`` (the CLI turns LwlcError into one line)."""
    code = run(sys.argv[1:] if argv is None else argv)
    if code:
        sys.exit(code)
