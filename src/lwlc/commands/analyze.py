"""``lwlc analyze``: layer-wise barriers between two checkpoints, written to a results directory.

This module parses the command line and dispatches: one pair (:mod:`.analyze_pair`), several
checkpoints (:mod:`.analyze_many`), one pair on several processes (:mod:`.processes`), or the
soup of k networks (``--soup``, :mod:`.analyze_soup`). The
flags become a MeasureSpec in :mod:`.analyze_flags`; results are written, drawn and printed by
:mod:`lwlc.results`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from lwlc.commands import processes
from lwlc.commands.analyze_flags import SPEC_FLAGS, options
from lwlc.commands.analyze_many import run_many
from lwlc.commands.analyze_pair import run_pair
from lwlc.commands.analyze_soup import run_soup
from lwlc.commands.errors import argument_error, short_help
from lwlc.commands.spec_flags import add_spec_arguments
from lwlc.core.errors import LwlcError
from lwlc.formats import inputs, lock


def build_parser() -> Any:
    """The analyze argument parser (jsonargparse, like the rest of lwlc's CLI)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

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
    _add_run_arguments(p)
    _add_soup_arguments(p)
    return p


def _add_soup_arguments(p: Any) -> None:
    """--soup and --weights: the k-model barrier of the networks' soup (:mod:`.analyze_soup`)."""
    from jsonargparse import ActionYesNo

    p.add_argument(
        "--soup",
        action=ActionYesNo(no_prefix="no-"),
        default=False,
        help="k-model barriers of a soup",
    )
    p.add_argument("--weights", type=str | None, default=None, help="--soup: one per network")


def _add_run_arguments(p: Any) -> None:
    """Where and how the analysis runs and what it leaves: devices, results folder, figures."""
    from jsonargparse import ActionYesNo

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


def run(argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the analysis; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(_repeats(argv))
    except Exception as err:  # jsonargparse's ArgumentError and type errors
        raise argument_error(err, "analyze") from None
    if args.devices < 1:
        raise LwlcError(f"--devices must be a whole number >= 1, got {args.devices}")
    if args.soup or args.weights is not None:
        return run_soup(args)
    if args.ckpt and len(args.ckpt) > 1:
        if args.devices > 1:
            raise LwlcError("--devices N analyzes one pair; give one --ckpt (or --ckpt-a/-b)")
        return run_many(args)
    if args.devices > 1 and "WORLD_SIZE" not in os.environ:
        options(args)  # a mistake is one line here, not one per process
        return processes.launch(argv, args.devices)
    args.ckpt = args.ckpt[0] if args.ckpt else None
    try:
        return run_pair(args)
    finally:
        processes.leave()
        lock.release_held()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point used by ``lwlc analyze`` (the CLI turns LwlcError into one line)."""
    code = run(sys.argv[1:] if argv is None else argv)
    if code:
        sys.exit(code)
