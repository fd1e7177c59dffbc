"""``lwlc analyze`` of one pair of networks: load and check them, prepare the measurement, sweep
it into the results files (resuming if asked), then draw and print the results.

The measurement itself is ``lwlc.core``'s; files, figures and tables are ``lwlc.results``'.
Results are written as each chunk of paths finishes (atomically), so an interrupted run keeps its
finished paths and ``--resume`` continues without recomputing them.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import torch

from lwlc.commands import processes
from lwlc.commands.analyze_flags import Options, options
from lwlc.commands.analyze_layers import print_layers, stages_record
from lwlc.commands.analyze_output import out_path, prepare_out
from lwlc.core import layers
from lwlc.core.calibration import batchnorm_layers
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import InterpolationPath
from lwlc.core.measurement import PreparedSweep, measure_extras, plan_paths, prepare
from lwlc.core.spec import MeasureSpec
from lwlc.core.stages import verify_stages
from lwlc.core.sweep import Rows
from lwlc.data.shapes import declared_input_shape
from lwlc.formats import inputs, lock
from lwlc.formats.checkpoints import Checkpoint
from lwlc.formats.io import read_csv
from lwlc.results import console, readback
from lwlc.results.files import Interrupted, Interrupts, ResultFiles, warn_nonfinite


@dataclass
class Pair:
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


def load_pair(args: Any, spec: MeasureSpec, members: tuple[Any, ...]) -> Pair:
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
    shape = declared_input_shape(data_cfg) if args.list_layers else None
    if shape is None:
        datamodule = inputs.build_data(args, data_cfg)
        data = {s: datamodule.tensors(s, spec.max_samples) for s in spec.splits}
        inputs.check_data(model, data, type(datamodule).__name__)
        example = next(iter(data.values()))[0][:2]
    else:  # --list-layers of lwlc's data: an example of its shape, no data (nor Lightning) loaded
        datamodule, data = None, {}
        example = listing_example(model, shape, data_cfg["class_path"].rpartition(".")[2])
    groups, paths = plan_paths(spec, model, example)
    return Pair(
        state_a, state_b, list(cks), model, model_cfg, data_cfg, datamodule, data, groups, paths
    )


def listing_example(model: torch.nn.Module, shape: tuple[int, ...], data: str) -> torch.Tensor:
    """Two random samples of ``shape`` (fixed seed), checked to fit ``model`` as data would be
    (``data`` names the data module), with the model's stages verified on them."""
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    inputs.check_fits(model, example, data)
    verify_stages(model, example)
    return example


def run_pair(args: Any) -> int:
    """The analysis of one pair of networks (``args`` parsed, with one ``--ckpt`` at most), by
    this process alone or, under torchrun, with the others (rank 0 writes and prints)."""
    started = time.time()
    opts = options(args)
    group, opts.device = processes.join(opts.device)
    members = inputs.read_members(args)
    out = None if args.list_layers else out_path(args, members[2])
    if out is not None and group.lead:
        lock.acquire(out, "lwlc analyze")
    group.barrier()  # every process has checked --out before rank 0 writes into it
    spec = opts.spec
    pair = load_pair(args, spec, members)
    if out is None:
        if group.lead:
            print_layers(pair.groups, pair.state_a, pair.model)
        return 0
    calibration = None
    if spec.bn == "reset" and batchnorm_layers(pair.model):
        calibration = pair.datamodule.tensors("train", spec.bn_samples)[0]
    measurement = prepare(
        spec, pair.model, pair.state_a, pair.state_b, pair.paths, pair.data, calibration,
        opts.device,
    )  # fmt: skip
    if group.lead:
        prepare_out(out, args)
    summary = start_summary(args, opts, pair, measurement.calibration, group.size)
    done: tuple[Rows, Rows] = ([], [])
    paths = measurement.paths
    if args.resume and group.lead:
        curves, barriers, paths = readback.resume(out, summary, paths, spec.splits, spec.grid)
        done = (curves, barriers)
    paths = group.broadcast(paths)
    if not group.lead:  # evaluate this process's share; rank 0 writes every row
        group.sweep(measurement, paths)
        group.barrier()  # leave together: gloo aborts a rank torn down while its peer writes
        return 0
    summary["memory"] = measurement.sizes.as_dict()
    with Interrupts() as interrupts:
        files = ResultFiles(out, measurement.paths, spec.splits, interrupts, done)
        stopped = sweep_to_files(files, pair, measurement, group, paths, summary, started)
    if stopped:
        if args.plots and files.barriers:
            draw_finished(files, summary)
    else:
        report(files, args, spec, summary)
    try:
        group.barrier()  # the other processes wait for the files before they leave the group
    except processes.PeerLost as lost:  # too late to cost anything: the files are written
        print(
            f"lwlc: warning: {lost}, after this analysis wrote its files in {out} "
            f"(summary.json: {summary['status']})",
            file=sys.stderr,
        )
    return stopped or 0


def describe_pairing(cks: Sequence[Checkpoint]) -> str:
    """How the two networks were made, as recorded by ``lwlc fit`` (or that it is unknown)."""
    if len(cks) == 1 and cks[0].pairing:
        p = cks[0].pairing
        return ", ".join(f"{k}: {v}" for k, v in p.items())
    return "two separate checkpoints (how they were trained is not recorded in them)"


def start_summary(
    args: Any, opts: Options, pair: Pair, calibration: torch.Tensor | None, processes: int
) -> dict[str, Any]:
    """summary.json of a run that starts: what was compared, how, and on what (``calibration``:
    the inputs that recomputed BatchNorm statistics, if any)."""
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
            "lwlc": package_version(),
        },
        "status": "running",
    }


def sweep_to_files(
    files: ResultFiles,
    pair: Pair,
    measurement: PreparedSweep,
    group: processes.Processes,
    paths: Sequence[InterpolationPath],
    summary: dict[str, Any],
    started: float,
) -> int:
    """Sweep ``paths`` into ``files`` after every chunk, with the summary's status; 0, or the
    exit code of an interrupting signal."""
    from tqdm.auto import tqdm

    spec = measurement.spec
    bar = tqdm(total=len(paths), desc="paths", unit="path", disable=not paths, file=sys.stderr)
    try:
        files.summary(summary)
        files.add([], [])
        result = group.sweep(measurement, paths, on_rows=files.add, progress=bar.update)
        bar.close()
        if spec.measures:
            files.measures(
                measure_extras(spec, pair.model, pair.groups, pair.state_a, pair.state_b, pair.data)
            )
        summary.update(
            status="complete",
            endpoints=result.endpoints,
            nonfinite_points=warn_nonfinite(files.curves),
            wall_time_s=round(time.time() - started, 3),
        )
        files.summary(summary)
    except Interrupted as stop:
        bar.close()
        summary["status"] = "interrupted"
        files.summary(summary, hold_signals=False)
        print(
            f"lwlc: interrupted by {stop}: the {files.finished_paths()} finished paths are saved "
            f"in {files.out}; rerun the same command with --resume to finish",
            file=sys.stderr,
        )
        return 128 + stop.signum
    except Exception as err:  # a full disk, a failing model: summary.json says so
        bar.close()
        summary.update(status="failed", error=" ".join(str(err).split()) or repr(err))
        lock.free_reserve(files.out)  # room for it on a full disk
        with suppress(LwlcError, OSError):  # not even it fits: the old summary.json stays
            files.summary(summary, hold_signals=False)
        if isinstance(err, processes.PeerLost):
            raise LwlcError(
                f"{err}: the {files.finished_paths()} finished paths are saved in {files.out}; "
                "rerun the same command with --resume to finish"
            ) from err
        raise
    return 0


def report(files: ResultFiles, args: Any, spec: MeasureSpec, summary: dict[str, Any]) -> None:
    """The figures (unless --no-plots) and the console report of a finished analysis."""
    from lwlc.results import draw

    out = files.out
    measured = read_csv(out / "measures.csv") if spec.measures else []
    if args.plots:
        draw.draw_figures(out, files.curves, files.barriers, summary, measures=measured)
    console.print_report(summary, spec.splits, files.barriers, measured)
    print(f"\nresults: {out}/curves.csv, {out}/barriers.csv, {out}/summary.json")


def draw_finished(files: ResultFiles, summary: dict[str, Any]) -> None:
    """After an interrupt, the figures of the paths finished so far, so that no figure lags its
    CSV (a second Ctrl-C skips them; --resume redraws them all at the end)."""
    from lwlc.results import draw

    try:
        draw.draw_figures(files.out, files.curves, files.barriers, summary)
    except KeyboardInterrupt:
        return
    except Exception as err:  # the interrupt's exit code and message come first
        print(f"lwlc: warning: no figures of the finished paths ({err})", file=sys.stderr)
        return
    print(f"lwlc: figures of the finished paths drawn in {files.out}", file=sys.stderr)


def package_version() -> str:
    """lwlc's installed version (``unknown`` when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lwlc")
    except PackageNotFoundError:
        return "unknown"
