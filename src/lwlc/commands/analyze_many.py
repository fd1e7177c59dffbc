"""``lwlc analyze --ckpt m1 m2 m3 ...``: every pair of several single-network checkpoints analysed
into its own folder, all pairs' barriers in one CSV and model x model matrices per layer."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from lwlc.commands.analyze_flags import options
from lwlc.commands.analyze_output import out_path
from lwlc.commands.analyze_pair import run_pair
from lwlc.core import layers
from lwlc.core.errors import LwlcError
from lwlc.core.sweep import Rows
from lwlc.formats import inputs, lock
from lwlc.formats.io import read_csv, write_csv
from lwlc.results.files import PAIR_COLUMNS


def labels_of(files: Sequence[str]) -> list[str]:
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


def check_networks(files: Sequence[str]) -> None:
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


def run_many(args: Any) -> int:
    """``--ckpt m1 m2 m3 ...``: every pair analysed into ``--out/<m_i>~<m_j>``, all pairs'
    barriers in ``--out/barriers.csv`` (plus ``model_a``, ``model_b``), a matrix per layer.
    """
    if args.ckpt_a or args.ckpt_b:
        raise LwlcError("give several --ckpt files or --ckpt-a/--ckpt-b, not both")
    if not (args.out or args.list_layers):
        raise LwlcError("comparing several checkpoints writes one folder per pair: give --out DIR")
    options(args)
    out = None if args.list_layers else out_path(args, [])
    if out is not None:
        lock.acquire(out, "lwlc analyze")
    labels = labels_of(args.ckpt)
    check_networks(args.ckpt)
    rows: Rows = []
    for i, j in combinations(range(len(labels)), 2):
        pair = args.clone()
        pair.ckpt, pair.ckpt_a, pair.ckpt_b = None, args.ckpt[i], args.ckpt[j]
        pair.out = None if out is None else str(out / f"{labels[i]}~{labels[j]}")
        code = run_pair(pair)
        if code or out is None:
            return code
        names = {"model_a": labels[i], "model_b": labels[j]}
        rows += [{**r, **names} for r in read_csv(Path(pair.out) / "barriers.csv")]
    write_csv(out / "barriers.csv", rows, PAIR_COLUMNS)
    if args.plots:
        from lwlc.results.draw import pairwise_figures

        pairwise_figures(out, rows)
    print(f"\nall pairs: {out}/barriers.csv (one folder per pair in {out})")
    return 0


# The pairwise matrices' axes: the model whose other layers are kept, the one interpolated toward.
ROW, COLUMN = "rest from", "interpolated toward"
