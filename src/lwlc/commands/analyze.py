"""``lwlc analyze``: layer-wise barriers between two checkpoints, written to a results directory.

Parsing and file handling only: the measurement itself is ``lwlc.core.sweep`` over the engine.
Results are written as each chunk of paths finishes (atomically), so an interrupted run keeps
its finished paths and ``--resume`` continues without recomputing them.
"""

from __future__ import annotations

import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import torch

from lwlc.commands import processes, results
from lwlc.commands.errors import argument_error, short_help
from lwlc.commands.spec_flags import add_spec_arguments
from lwlc.core import layers
from lwlc.core.barriers import REFERENCES
from lwlc.core.calibration import batchnorm_layers
from lwlc.core.engine import model_stages
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import InterpolationPath
from lwlc.core.measurement import ALIGNED, PreparedSweep, measure_extras, plan_paths, prepare
from lwlc.core.measures import MEASURE_COLUMNS
from lwlc.core.spec import MeasureSpec, from_flags
from lwlc.core.stages import find_stages
from lwlc.core.sweep import BARRIER_COLUMNS, CURVE_COLUMNS, Rows, path_key
from lwlc.formats import inputs, lock, outputs
from lwlc.formats.checkpoints import Checkpoint
from lwlc.formats.io import as_json, read_csv, write_csv, write_json

# The measurement's flags, made from MeasureSpec's fields (--group and --custom take their own
# syntax, below).
SPEC_FLAGS = (
    "plans", "group_depth", "alphas", "num_alphas", "splits", "rest_from", "bn", "bn_samples",
    "bn_batch_size", "max_samples", "batch_size", "chunk_size", "memory_budget", "precision",
    "align", "measures", "robustness_seeds",
)  # fmt: skip
RESULT_FILES = ("curves.csv", "barriers.csv", "measures.csv", "summary.json")
PAIR_COLUMNS = (*BARRIER_COLUMNS, "model_a", "model_b")


def build_parser() -> Any:
    """The analyze argument parser (jsonargparse, like the rest of lwlc's CLI)."""
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

    p = short_help(ArgumentParser)(
        prog="lwlc analyze",
        description="Layer-wise linear connectivity of two networks.",
        exit_on_error=False,
        allow_abbrev=False,  # '--alpha' must not silently mean '--alphas'
    )
    p.add_argument(
        "--ckpt",
        type=str,
        nargs="+",
        default=None,
        help="a paired checkpoint from lwlc fit (compares its members A and B), or several "
        "single-network checkpoints (compares every pair; needs --out)",
    )
    inputs.add_network_arguments(p)
    p.add_argument(
        "--config",
        action=ActionConfigFile,
        help="a YAML file of these options (--print_config writes one)",
    )
    p.add_argument(
        "--group",
        type=list[str] | str,
        default=[],
        help="merge the layers matching a glob (or re:regex) into one group; repeatable",
    )
    p.add_argument(
        "--custom",
        type=list[str] | str,
        default=[],
        help="custom plan set 'name=pattern,pattern'; repeatable",
    )
    add_spec_arguments(p, SPEC_FLAGS)
    p.add_argument("--device", type=str, default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--devices",
        type=int,
        default=1,
        help="split the paths across N processes here (one GPU each on CUDA)",
    )
    p.add_argument(
        "--out",
        type=str | None,
        default=None,
        help="results directory (default: next to the checkpoint)",
    )
    p.add_argument(
        "--overwrite",
        action=ActionYesNo(no_prefix="no-"),
        default=False,
        help="replace an existing non-empty results directory",
    )
    p.add_argument(
        "--resume",
        action=ActionYesNo(no_prefix="no-"),
        default=False,
        help="continue an interrupted run in --out without recomputing",
    )
    p.add_argument(
        "--list-layers",
        action=ActionYesNo(no_prefix="no-"),
        default=False,
        help="print the layers/groups and exit",
    )
    p.add_argument(
        "--plots",
        action=ActionYesNo(no_prefix="no-"),
        default=True,
        help="draw PNG figures of the results (--no-plots: none)",
    )
    return p


@dataclass
class Options:
    """The validated measurement of one run and where it runs (checked before any file is
    read)."""

    spec: MeasureSpec
    device: torch.device


REPEATABLE = ("--group", "--custom")


def _repeats(argv: Sequence[str]) -> list[str]:
    """``argv`` with the second and later ``--group``/``--custom`` written as jsonargparse's
    appending ``--group+`` (each is a list that a config file gives as YAML), and the older
    spelling ``--no_plots`` of a negated switch as ``--no-plots``."""
    seen: set[str] = set()
    out = []
    for arg in argv:
        if arg.startswith("--no_"):
            arg = "--no-" + arg.removeprefix("--no_")
        flag, equals, value = arg.partition("=")
        if flag in REPEATABLE:
            if flag in seen:
                arg = f"{flag}+{equals}{value}"
            seen.add(flag)
        out.append(arg)
    return out


def _listed(value: str | Sequence[str]) -> list[str]:
    """A repeatable option's values: one given once is a string."""
    return [value] if isinstance(value, str) else list(value)


def _spec(args: Any) -> MeasureSpec:
    """The measurement the flags describe, validated by :class:`MeasureSpec` (the messages every
    front end gives, naming the flag: ``--batch-size must be ...``)."""
    custom: dict[str, list[str]] = {}
    for text in _listed(args.custom):
        name, _, patterns = text.partition("=")
        if not patterns:
            raise LwlcError(f"--custom {text!r} must look like 'name=pattern,pattern'")
        custom[name.strip()] = inputs.csv_list(patterns)
    try:
        alphas = None if args.alphas is None else [float(t) for t in inputs.csv_list(args.alphas)]
    except ValueError:
        raise LwlcError(
            f"--alphas {args.alphas!r} must be comma-separated numbers in [0, 1], e.g. 0,0.5,1"
        ) from None
    fields = {name: getattr(args, name) for name in SPEC_FLAGS}
    for name in ("plans", "rest_from", "splits", "measures"):  # comma strings or YAML lists
        fields[name] = inputs.csv_list(fields[name])
    fields.update(custom=custom, group=_listed(args.group), alphas=alphas)
    return from_flags(**fields)


def _options(args: Any) -> Options:
    """Check every option that needs no file, so mistakes are reported before slow work."""
    inputs.check_sources(args, "compare")
    return Options(_spec(args), _device(args.device))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LwlcError(
            f"--device {name} requested but CUDA is not available on this machine: use --device cpu"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise LwlcError(f"unknown --device {name!r}: use cpu, cuda, cuda:N or auto") from None


def _out_path(args: Any, cks: Sequence[Checkpoint]) -> Path:
    """The results directory, refused (before any work) if it would overwrite results unasked."""
    if args.out:
        out = Path(args.out)
    else:
        src = Path(cks[0].path).resolve().parent
        out = (src.parent if src.name == "checkpoints" else src) / "analysis"
    outputs.check_out(out)
    lock.check_free(out)  # another run writing there is named first, with or without --resume
    if lock.holds_files(out) and not (args.overwrite or args.resume):
        raise LwlcError(
            f"--out {out} exists and is not empty: pass --overwrite to replace it "
            "or --resume to continue it"
        )
    return out


def _prepare_out(out: Path, args: Any) -> None:
    """Create ``out`` and prove it writable; with --overwrite, drop the previous results."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise LwlcError(
            f"cannot write to --out {out} ({err.strerror}): choose a writable directory"
        ) from None
    if args.overwrite and not args.resume:
        for name in RESULT_FILES:
            (out / name).unlink(missing_ok=True)
    for stray in results.remove_temporaries(out, RESULT_FILES):
        print(f"removed {stray}, left by an earlier run that was stopped", file=sys.stderr)


def _print_layers(
    groups: Sequence[layers.Group], state: dict[str, torch.Tensor], model: torch.nn.Module
) -> None:
    width = max(len(g.name) for g in groups)
    print(f"{'#':>3}  {'group':<{width}}  {'tensors':>7}  {'numel':>10}  module")
    modules = dict(model.named_modules())
    for i, g in enumerate(groups):
        numel = sum(state[k].numel() for k in g.keys)
        kind = describe_module(modules[g.name]) if g.name in modules else "-"
        print(f"{i:>3}  {g.name:<{width}}  {len(g.keys):>7}  {numel:>10}  {kind}")
    found = stages_record(model, list(state))
    print(f"\nstages: {found['count']} ({found['how']})")


def describe_module(m: torch.nn.Module) -> str:
    """A layer's type and shape: ``Conv2d 3->64 3x3``, ``Linear 64->128``, ``BatchNorm2d 64``."""
    name = type(m).__name__
    if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        return f"{name} {m.in_channels}->{m.out_channels} {'x'.join(map(str, m.kernel_size))}"
    if isinstance(m, torch.nn.Linear):
        return f"{name} {m.in_features}->{m.out_features}"
    if isinstance(m, torch.nn.Embedding):
        return f"{name} {m.num_embeddings}x{m.embedding_dim}"
    if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
        return f"{name} {m.num_features}"
    if isinstance(m, torch.nn.LayerNorm):
        return f"{name} {'x'.join(map(str, m.normalized_shape))}"
    return name


def stages_record(model: torch.nn.Module, keys: list[str]) -> dict[str, Any]:
    """How many stages the engine evaluates ``model`` in and how they were found."""
    found, used = find_stages(model), model_stages(model, keys)
    how = (
        found.how
        if len(used) == len(found.pairs)
        else "one stage: the stages found do not cover the state dict"
    )
    return {"count": len(used), "how": how}


def _shown(value: object, digits: int) -> str:
    """``value`` to ``digits`` decimals, what rounds to zero shown as 0 (never ``-0.0000``)."""
    x = float(value)  # type: ignore[arg-type]
    return f"{0.0 if abs(x) < 0.5 * 10**-digits else x:.{digits}f}"


def print_measures(rows: Rows) -> None:
    """The whole model's weight measures, and agreement and robustness per split, one line
    each (measures.csv has every layer)."""
    print("\nOther measures (every layer in measures.csv):")
    for r in rows:
        if r["group"] != "all":
            continue
        where = f" on {r['split']}" if r["split"] else ""
        at = f" at alpha {float(r['alpha']):g}" if r["alpha"] not in ("", None) else ""
        print(f"  {r['measure']} {r['between']}{where}{at}: {float(r['value']):.4f}")


def print_table(barriers: Rows, split: str) -> None:
    """A readable table of every path's loss barrier against each reference side by side (nats)
    and its error barrier against its own endpoints (percentage points), with a legend."""
    by_ref: dict[str, dict[tuple[str, str, str], dict[str, object]]] = {}
    for r in barriers:
        if r["split"] == split:
            by_ref.setdefault(str(r["reference"]), {})[path_key(r)] = r
    paths = by_ref.get("path", {})
    if not paths:
        return
    refs = [ref for ref in ("path", "models", "midpoint") if ref in by_ref]
    width = max(len(str(r["group"])) for r in paths.values())
    print(f"\nBarriers on {split}: loss in nats against each reference, error in percentage points")
    print(
        "  path: vs the line between the path's own endpoints; models: vs the line between A "
        "and B; midpoint: at alpha 0.5 vs the mean of A and B (the paper's heatmap value)"
    )
    header = "".join(f"{'loss ' + ref:>15}" for ref in refs)
    print(f"{'plan':<17} {'group':<{width}} {'rest':<4}{header} {'error path':>11}")
    for key, r in paths.items():
        losses = "".join(
            f"{_shown(by_ref[ref].get(key, {}).get('loss_barrier', float('nan')), 4):>15}"
            for ref in refs
        )
        error = _shown(100 * float(r["error_barrier"]), 2)  # type: ignore[arg-type]
        print(f"{r['plan']:<17} {r['group']:<{width}} {r['rest_from']:<4}{losses} {error:>11}")


def describe_pairing(cks: Sequence[Checkpoint]) -> str:
    """How the two networks were made, as recorded by ``lwlc fit`` (or that it is unknown)."""
    if len(cks) == 1 and cks[0].pairing:
        p = cks[0].pairing
        return ", ".join(f"{k}: {v}" for k, v in p.items())
    return "two separate checkpoints (how they were trained is not recorded in them)"


def _identity(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What determines the numbers of a results directory; a resume must agree on all of it."""
    options = summary.get("options") or {}
    return as_json(
        {
            "checkpoints": [c.get("sha256") for c in summary.get("checkpoints", [])],
            **{
                k: summary.get(k)
                for k in ("model", "data", "layers", "alphas", "samples", "bn_calibration_samples")
            },
            **{k: options.get(k) for k in ("bn", "splits")},
            # the calibration batch size sets the statistics only where there are any
            "bn_batch_size": options.get("bn_batch_size")
            if summary.get("bn_calibration_samples")
            else None,
        }
    )


def _resume(
    out: Path,
    summary: Mapping[str, Any],
    paths: Sequence[InterpolationPath],
    splits: Sequence[str],
    alphas: Sequence[float],
) -> tuple[Rows, Rows, list[InterpolationPath]]:
    """The finished rows in ``out`` and the paths still to do; refuse results of another setup."""
    files = [out / name for name in ("curves.csv", "barriers.csv", "summary.json")]
    if not any(f.exists() for f in files):
        return [], [], list(paths)
    if not files[2].exists():
        raise LwlcError(
            f"--resume: {out} has results but no summary.json to check them against: "
            "use --overwrite or another --out"
        )
    previous = results.read_summary(files[2])
    old, new = _identity(previous), _identity(summary)
    differ = [k for k in new if old.get(k) != new[k]]
    if differ:
        raise LwlcError(
            f"--resume: the results in {out} were made with different {', '.join(differ)}: "
            "rerun with the original options, or use --overwrite or another --out"
        )
    curves = results.read_rows(files[0], CURVE_COLUMNS) if files[0].exists() else []
    barriers = results.read_rows(files[1], BARRIER_COLUMNS) if files[1].exists() else []
    # a path is finished when every split has every alpha and every reference
    points: dict[tuple[str, str, str], set[tuple[str, float]]] = {}
    for r in curves:
        points.setdefault(path_key(r), set()).add((str(r["split"]), float(r["alpha"])))
    refs: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
    for r in barriers:
        refs.setdefault(path_key(r), set()).add((str(r["split"]), str(r["reference"])))
    references = [r for r in REFERENCES if r != "midpoint" or 0.5 in alphas]
    wanted_points = {(s, float(a)) for s in splits for a in alphas}
    wanted_refs = {(s, r) for s in splits for r in references}
    done = {
        k for k in refs if refs[k] >= wanted_refs and points.get(k, set()) >= wanted_points
    }
    todo = [p for p in paths if (p.plan, p.group, p.rest_from) not in done]
    print(
        f"resuming: {len(paths) - len(todo)} of {len(paths)} paths already in {out}",
        file=sys.stderr,
    )
    return (
        [r for r in curves if path_key(r) in done],
        [r for r in barriers if path_key(r) in done],
        todo,
    )


class _Interrupted(Exception):
    """SIGINT or SIGTERM, turned into an exception so that finished results are kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Interrupts:
    """Within the block, SIGINT and SIGTERM raise ``_Interrupted``, except while results are being
    written (``with interrupts.writing():``): a signal arriving then is raised once the write is
    done, so the result files always agree with each other. Off the main thread (where Python
    cannot handle signals) it changes nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> _Interrupts:
        self._writing = False
        self._pending: int | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        if self._writing:
            self._pending = signum
        else:
            raise _Interrupted(signum)

    @contextmanager
    def writing(self) -> Iterator[None]:
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._pending is not None:
            raise _Interrupted(self._pending)


def _in_order(rows: Rows, paths: Sequence[InterpolationPath], splits: Sequence[str]) -> Rows:
    """Rows by path (in plan order), then split, keeping the order of alphas and references: the
    files come out the same however the work was chunked or resumed."""
    position = {(p.plan, p.group, p.rest_from): i for i, p in enumerate(paths)}
    split_position = {s: i for i, s in enumerate(splits)}
    return sorted(
        rows,
        key=lambda r: (
            position.get(path_key(r), len(paths)),
            split_position.get(str(r["split"]), 0),
        ),
    )


def _warn_nonfinite(curves: Rows) -> int:
    """Say how many curve points have a NaN/Inf loss (they are kept as such, never dropped)."""
    bad = sum(not math.isfinite(float(r["loss"])) for r in curves)
    if bad:
        print(
            f"lwlc: warning: {bad} of {len(curves)} evaluated points have a NaN/Inf loss "
            "(kept as nan in curves.csv; the barriers of their paths are nan): "
            "those interpolated models diverge",
            file=sys.stderr,
        )
    return bad


def run(argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the analysis; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(_repeats(argv))
    except Exception as err:  # jsonargparse's ArgumentError and type errors
        raise argument_error(err, "analyze") from None
    if args.devices < 1:
        raise LwlcError(f"--devices must be a whole number >= 1, got {args.devices}")
    if args.ckpt and len(args.ckpt) > 1:
        if args.devices > 1:
            raise LwlcError("--devices N analyzes one pair; give one --ckpt (or --ckpt-a/-b)")
        return _run_many(args)
    if args.devices > 1 and "WORLD_SIZE" not in os.environ:
        _options(args)  # a mistake is one line here, not one per process
        return processes.launch(argv, args.devices)
    args.ckpt = args.ckpt[0] if args.ckpt else None
    try:
        return _run_pair(args)
    finally:
        processes.leave()
        lock.release_held()


@dataclass
class _Pair:
    """The networks and data of one analysis, loaded and checked."""

    state_a: dict[str, torch.Tensor]
    state_b: dict[str, torch.Tensor]
    cks: list[Checkpoint]
    model: torch.nn.Module
    model_cfg: dict[str, Any]
    data_cfg: dict[str, Any]
    datamodule: Any
    data: dict[str, tuple[torch.Tensor, torch.Tensor]]
    groups: list[layers.Group]
    paths: list[InterpolationPath]


def _load_pair(args: Any, spec: MeasureSpec, members: tuple[Any, ...]) -> _Pair:
    """Build the model and the data of ``members`` (``inputs.read_members``), check that they
    fit, and plan the paths."""
    state_a, state_b, cks, found = members
    model_cfg = inputs.model_config(args, found)
    layers.check_compatible(state_a, state_b)
    layers.check_finite(state_a, "A")
    layers.check_finite(state_b, "B")
    model = inputs.build_network(args, model_cfg, state_a)
    model.load_state_dict(state_a)
    data_cfg = inputs.data_config(args, cks)
    if data_cfg is None:
        raise LwlcError(
            "the checkpoint records no data config: pass --data CLASS, "
            "e.g. --data lwlc.data.DigitsDataModule"
        )
    datamodule = inputs.build_data(args, data_cfg)
    data = {s: datamodule.tensors(s, spec.max_samples) for s in spec.splits}
    inputs.check_data(model, data, type(datamodule).__name__)
    example = next(iter(data.values()))[0][:2]
    groups, paths = plan_paths(spec, model, example)
    return _Pair(
        state_a, state_b, list(cks), model, model_cfg, data_cfg, datamodule, data, groups, paths
    )


def _run_pair(args: Any) -> int:
    """The analysis of one pair of networks (``args`` parsed, with one ``--ckpt`` at most), by
    this process alone or, under torchrun, with the others (rank 0 writes and prints)."""
    started = time.time()
    opts = _options(args)
    group, opts.device = processes.join(opts.device)
    members = inputs.read_members(args)
    out = None if args.list_layers else _out_path(args, members[2])
    if out is not None and group.lead:
        lock.acquire(out, "lwlc analyze")
    group.barrier()  # every process has checked --out before rank 0 writes into it
    spec = opts.spec
    pair = _load_pair(args, spec, members)
    if out is None:
        if group.lead:
            _print_layers(pair.groups, pair.state_a, pair.model)
        return 0

    calibration = None
    if spec.bn == "reset" and batchnorm_layers(pair.model):
        calibration = pair.datamodule.tensors("train", spec.bn_samples)[0]
    measurement = prepare(
        spec, pair.model, pair.state_a, pair.state_b, pair.paths, pair.data, calibration,
        opts.device,
    )  # fmt: skip
    if group.lead:
        _prepare_out(out, args)
    summary = _summary(args, opts, pair, measurement, group.size)
    curves: Rows = []
    barriers: Rows = []
    paths = measurement.paths
    if args.resume and group.lead:
        curves, barriers, paths = _resume(out, summary, paths, spec.splits, spec.grid)
    paths = group.broadcast(paths)
    if not group.lead:  # evaluate this process's share; rank 0 writes every row
        group.sweep(measurement, paths)
        return 0
    summary["memory"] = measurement.sizes.as_dict()
    stopped = _sweep_to_files(
        out, pair, measurement, group, paths, (curves, barriers), summary, started
    )
    if stopped:
        return stopped
    _report(out, args, spec, summary, curves, barriers)
    return 0


def _summary(
    args: Any, opts: Options, pair: _Pair, measurement: PreparedSweep, processes: int
) -> dict[str, Any]:
    """summary.json of a run that starts: what was compared, how, and on what."""
    calibration = measurement.calibration
    return {
        "checkpoints": [
            {"path": ck.path, "sha256": ck.sha256, "pairing": ck.pairing} for ck in pair.cks
        ],
        "members": "a and b of one paired checkpoint" if args.ckpt else "ckpt_a and ckpt_b",
        "pairing": describe_pairing(pair.cks),
        "model": pair.model_cfg,
        "data": pair.data_cfg,
        "layers": [{"name": g.name, "keys": list(g.keys)} for g in pair.groups],
        "stages": stages_record(pair.model, list(pair.state_a)),
        "alphas": opts.spec.grid,
        "options": {
            k: (v if not hasattr(v, "as_dict") else v.as_dict())
            for k, v in vars(args).items()
            if k not in ("model", "data")
        },
        "samples": {s: len(t[1]) for s, t in pair.data.items()},
        "bn_calibration_samples": 0 if calibration is None else len(calibration),
        "device": str(opts.device),
        "processes": processes,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lwlc": _version(),
        },
        "status": "running",
    }


def _sweep_to_files(
    out: Path,
    pair: _Pair,
    measurement: PreparedSweep,
    group: processes.Processes,
    paths: Sequence[InterpolationPath],
    rows: tuple[Rows, Rows],
    summary: dict[str, Any],
    started: float,
) -> int:
    """Sweep ``paths``, writing the rows (into ``rows``' curves and barriers and their CSVs) after
    every chunk and the summary's status; 0, or the exit code of an interrupting signal."""
    from tqdm.auto import tqdm

    spec = measurement.spec
    every_path = measurement.paths
    curves, barriers = rows
    with _Interrupts() as interrupts:

        def save(new_curves: Rows, new_barriers: Rows) -> None:
            with interrupts.writing():
                curves[:] = _in_order(curves + new_curves, every_path, spec.splits)
                barriers[:] = _in_order(barriers + new_barriers, every_path, spec.splits)
                write_csv(out / "curves.csv", curves, CURVE_COLUMNS)
                write_csv(out / "barriers.csv", barriers, BARRIER_COLUMNS)

        bar = tqdm(total=len(paths), desc="paths", unit="path", disable=not paths, file=sys.stderr)
        try:
            with interrupts.writing():
                write_json(out / "summary.json", summary)
                save([], [])
            result = group.sweep(measurement, paths, on_rows=save, progress=bar.update)
            bar.close()
            if spec.measures:
                extras = measure_extras(
                    spec, pair.model, pair.groups, pair.state_a, pair.state_b, pair.data
                )
                with interrupts.writing():
                    write_csv(out / "measures.csv", extras, MEASURE_COLUMNS)
            summary.update(
                status="complete",
                endpoints=result.endpoints,
                nonfinite_points=_warn_nonfinite(curves),
                wall_time_s=round(time.time() - started, 3),
            )
            with interrupts.writing():
                write_json(out / "summary.json", summary)
        except _Interrupted as stop:
            bar.close()
            summary["status"] = "interrupted"
            write_json(out / "summary.json", summary)
            finished = len({path_key(r) for r in barriers})
            print(
                f"lwlc: interrupted by {stop}: the {finished} finished paths are saved in {out}; "
                "rerun the same command with --resume to finish",
                file=sys.stderr,
            )
            return 128 + stop.signum
        except Exception as err:  # a full disk, a failing model: summary.json says so
            bar.close()
            summary.update(status="failed", error=" ".join(str(err).split()) or repr(err))
            lock.free_reserve(out)  # room for it on a full disk
            with suppress(LwlcError, OSError):  # not even it fits: the old summary.json stays
                write_json(out / "summary.json", summary)
            raise
    return 0


def _report(
    out: Path, args: Any, spec: MeasureSpec, summary: Mapping[str, Any], curves: Rows,
    barriers: Rows,
) -> None:  # fmt: skip
    """The figures (unless --no-plots) and the console report of a finished analysis."""
    measured = read_csv(out / "measures.csv") if spec.measures else []
    if args.plots:
        draw_figures(out, curves, barriers, summary, measures=measured)
    print(f"\npair: {summary['pairing']}")
    print(f"stages: {summary['stages']['count']} ({summary['stages']['how']})")
    for split in spec.splits:
        print_table(barriers, split)
    if measured:
        print_measures(measured)
    print(f"\nresults: {out}/curves.csv, {out}/barriers.csv, {out}/summary.json")


def draw_figures(
    out: Path,
    curves: Rows,
    barriers: Rows,
    summary: Mapping[str, Any],
    reference: str = "path",
    measures: Rows = (),
) -> list[Path]:
    """Draw an analysis's figures into ``out`` (also ``lwlc plot``'s): curves and bars per split
    at ``reference``, and with ``--align`` the before/after matrices at every reference; their
    titles say how the pair was made (from ``summary``). Returns the files written."""
    from lwlc import figures

    pairing = figures.pairing_text(summary)
    written = figures.save_analysis_figures(out, curves, barriers, reference, pairing)
    written += figures.save_distances(out, measures, pairing)
    comparison = _alignment_rows(barriers)
    for split, ref in dict.fromkeys((r["split"], r["reference"]) for r in comparison):
        fig = figures.barrier_matrices(
            comparison, "group", "alignment", "rest_from", reference=ref, split=split,
            pairing=pairing,
        )  # fmt: skip
        written.append(figures.save_figure(fig, out / f"alignment_{split}_{ref}.png"))
    return written


def _alignment_rows(barriers: Rows) -> Rows:
    """Full and single-layer barriers with an ``alignment`` column (before/after), if aligned.

    The full model's row is repeated for each rest model, to head both panels of the figure.
    """
    if not any(str(r["plan"]).startswith(ALIGNED) for r in barriers):
        return []
    rests = list(dict.fromkeys(r["rest_from"] for r in barriers))
    rows = []
    for r in barriers:
        plan = str(r["plan"]).removeprefix(ALIGNED)
        after = "after" if str(r["plan"]).startswith(ALIGNED) else "before"
        if plan == "full":
            full = {**r, "group": "full model", "alignment": after}
            rows += [{**full, "rest_from": x} for x in rests]
        elif plan == "single":
            rows.append({**r, "alignment": after})
    return rows


def _labels(files: Sequence[str]) -> list[str]:
    """Short distinct names of checkpoint files: their paths without the parts all share
    (``runs/x/checkpoints/last.ckpt`` and ``runs/y/checkpoints/last.ckpt`` are ``x`` and ``y``)."""
    paths = [Path(f).resolve() for f in files]
    if len(set(paths)) < len(paths):
        raise LwlcError(f"a checkpoint is listed twice in --ckpt {' '.join(files)}: list each once")
    for parts in ([p.with_suffix("").parts for p in paths], [p.parts for p in paths]):
        shortest = min(len(p) for p in parts)
        head = next((i for i in range(shortest) if len({p[i] for p in parts}) > 1), shortest - 1)
        tail = next((i for i in range(shortest) if len({p[-1 - i] for p in parts}) > 1), 0)
        labels = ["_".join(p[head : len(p) - tail] or p[-1:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return ["_".join(p.parts[1:]) for p in paths]


def _check_networks(files: Sequence[str]) -> None:
    """Read every file of ``--ckpt m1 m2 ...`` before any pair is written: each must be one
    network, finite, and of the first one's layers, shapes and dtypes."""
    first = None
    for file in files:
        ck = inputs.read_network(file)
        if ck.paired:
            raise LwlcError(
                f"--ckpt {file} is a paired checkpoint (two networks) among several: list "
                f"single-network checkpoints, or compare its members with --ckpt {file} alone"
            )
        state = ck.members["model"]
        layers.check_finite(state, file)
        if first is None:
            first = state
        else:
            try:
                layers.check_compatible(first, state)
            except LwlcError as err:
                raise LwlcError(f"--ckpt {files[0]} (A) and {file} (B) differ: {err}") from None


def _run_many(args: Any) -> int:
    """``--ckpt m1 m2 m3 ...``: every pair analysed into ``--out/<m_i>~<m_j>``, all pairs'
    barriers in ``--out/barriers.csv`` (plus ``model_a``, ``model_b``), a matrix per layer.
    """
    if args.ckpt_a or args.ckpt_b:
        raise LwlcError("give several --ckpt files or --ckpt-a/--ckpt-b, not both")
    if not (args.out or args.list_layers):
        raise LwlcError("comparing several checkpoints writes one folder per pair: give --out DIR")
    _options(args)
    out = None if args.list_layers else _out_path(args, [])
    if out is not None:
        lock.acquire(out, "lwlc analyze")
    labels = _labels(args.ckpt)
    _check_networks(args.ckpt)
    rows: Rows = []
    for i, j in combinations(range(len(labels)), 2):
        pair = args.clone()
        pair.ckpt, pair.ckpt_a, pair.ckpt_b = None, args.ckpt[i], args.ckpt[j]
        pair.out = None if out is None else str(out / f"{labels[i]}~{labels[j]}")
        code = _run_pair(pair)
        if code or out is None:
            return code
        names = {"model_a": labels[i], "model_b": labels[j]}
        rows += [{**r, **names} for r in read_csv(Path(pair.out) / "barriers.csv")]
    write_csv(out / "barriers.csv", rows, PAIR_COLUMNS)
    if args.plots:
        pairwise_figures(out, rows)
    print(f"\nall pairs: {out}/barriers.csv (one folder per pair in {out})")
    return 0


# The pairwise matrices' axes: the model whose other layers are kept, the one interpolated toward.
ROW, COLUMN = "rest from", "interpolated toward"


def _pairwise_rows(rows: Rows, aligned: bool) -> Rows:
    """Barrier rows as matrix cells: ``ROW`` is the rest model, ``COLUMN`` the other one."""
    cells = []
    for r in rows:
        plan = str(r["plan"])
        kind = plan.removeprefix(ALIGNED)
        if plan.startswith(ALIGNED) != aligned or kind not in ("full", "single"):
            continue
        group = "full model" if kind == "full" else r["group"]
        ends = [(r["model_a"], r["model_b"]), (r["model_b"], r["model_a"])]
        if kind == "full":
            chosen = ends
        else:
            chosen = ends[:1] if r["rest_from"] == "a" else ends[1:]
        cells += [{**r, "group": group, ROW: m, COLUMN: t} for m, t in chosen]
    return cells


def pairwise_figures(out: Path, rows: Rows) -> list[Path]:
    """``pairwise[_aligned]_<split>_<reference>.png``: per layer, model x model loss barriers
    (also ``lwlc plot``'s for a folder of several checkpoints). Returns the files written."""
    from lwlc import figures

    models = list(dict.fromkeys(m for r in rows for m in (r["model_a"], r["model_b"])))
    written = []
    for aligned in (False, True):
        cells = _pairwise_rows(rows, aligned)
        pairing = f"every pair of {', '.join(map(str, models))}" + (
            ", B aligned to A" if aligned else ""
        )
        for split, ref in dict.fromkeys((r["split"], r["reference"]) for r in cells):
            fig = figures.barrier_matrices(
                cells, ROW, COLUMN, "group", reference=ref, split=split, pairing=pairing
            )
            name = f"pairwise{'_aligned' if aligned else ''}_{split}_{ref}.png"
            written.append(figures.save_figure(fig, out / name))
    return written


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
