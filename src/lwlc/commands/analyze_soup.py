"""``lwlc analyze --soup --ckpt m1 m2 m3 ... [--weights ...]``: the k-model barrier of every group.

For every path of the plans (the group it names) and split, the soup of the k networks on that
group (the other layers from each ``--rest-from`` member) against the weighted mean of the
members' own loss and error (``lwlc.core.soup.measure_soup``). The networks are read as ``lwlc
merge`` reads them (``lwlc.formats.inputs.read_networks``: one paired checkpoint, ``--ckpt-a``
and ``--ckpt-b``, or k single-network files); results go to ``soup_barriers.csv`` and
``summary.json`` (``lwlc.results.soup``).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from lwlc.commands.analyze_flags import Options, parse_device, spec_of
from lwlc.commands.analyze_layers import print_layers
from lwlc.commands.analyze_output import out_path, prepare_out
from lwlc.commands.analyze_pair import Pair, describe_pairing, load_pair, start_summary
from lwlc.core import layers
from lwlc.core.calibration import batchnorm_layers
from lwlc.core.errors import LwlcError
from lwlc.core.soup import check_weights, measure_soup, member_name
from lwlc.formats import inputs, lock
from lwlc.results.soup import SOUP_FILE, draw_soup, print_soup, write_soup


def soup_request(args: Any) -> tuple[Options, list[float], list[int]]:
    """The measurement, the weights and the rest members (indices), checked before any file is
    read: the number of networks is known from the flags (one file: a pair)."""
    files = list(args.ckpt or [])
    if files and (args.ckpt_a or args.ckpt_b):
        raise LwlcError("give either --ckpt FILE(S) or --ckpt-a A --ckpt-b B, not both")
    if not files and not (args.ckpt_a and args.ckpt_b):
        raise LwlcError("nothing to average: give --ckpt M1 M2 ..., --ckpt PAIR.ckpt or --ckpt-a "
                        "A --ckpt-b B")  # fmt: skip
    for flag, refused in (("--devices N", args.devices > 1), ("--resume", args.resume),
                          ("--measures", bool(inputs.csv_list(args.measures or [])))):  # fmt: skip
        if refused:
            raise LwlcError(f"{flag} applies to a pair's analysis, not to --soup: leave it out")
    k = len(files) if len(files) > 1 else 2
    weights = check_weights(inputs.weights_value(args.weights), k)
    rests = [r.lower() for r in inputs.csv_list(args.rest_from)]
    names = [member_name(i) for i in range(k)]
    bad = [r for r in rests if r not in names]
    if bad or not rests:
        raise LwlcError(
            f"--rest-from: {bad[0] if bad else 'nothing'!r} is not one of the members "
            f"{', '.join(names)}"
        )
    planned = args.clone()
    planned.rest_from = ["a"]  # the members are the soup's rests, not a pair's a and b
    spec = spec_of(planned)
    return Options(spec, parse_device(args.device)), weights, [names.index(r) for r in rests]


def load_members(
    args: Any, opts: Options, nets: inputs.Networks
) -> tuple[Pair, list[dict[str, torch.Tensor]]]:
    """The k networks (checked: same layers, shapes and dtypes, finite), with the model, data and
    paths built from the first two as a pair's analysis builds them."""
    states = nets.states
    paths = [ck.path for ck in nets.checkpoints]
    for i, state in enumerate(states[1:], start=1):
        try:
            layers.check_compatible(states[0], state)
        except LwlcError as err:
            name = member_name(i)
            raise LwlcError(
                f"member {name} ({paths[min(i, len(paths) - 1)]}) does not match member a "
                f"({paths[0]}); with A = a and B = {name}: {err}"
            ) from None
        layers.check_finite(state, member_name(i).upper())
    pair = load_pair(args, opts.spec, (states[0], states[1], nets.checkpoints, nets.model_config))
    return pair, states


def run_soup(args: Any) -> int:
    """``lwlc analyze --soup``: measure the k-model barriers, write them, print them."""
    started = time.time()
    opts, weights, rests = soup_request(args)
    nets = inputs.read_networks(args, "average")
    out = None if args.list_layers else out_path(args, nets.checkpoints)
    if out is not None:
        lock.acquire(out, "lwlc analyze")
    pair, states = load_members(args, opts, nets)
    if out is None:
        print_layers(pair.groups, pair.state_a, pair.model)
        return 0
    calibration = None
    if opts.spec.bn == "reset" and batchnorm_layers(pair.model):
        calibration = pair.datamodule.tensors("train", opts.spec.bn_samples)[0]
    prepare_out(out, args)
    summary = soup_summary(args, opts, pair, calibration, weights, rests)
    write_soup(out, summary)
    try:
        result = measure_soup(
            opts.spec, pair.model, states, pair.paths, pair.data, weights, rests, calibration,
            opts.device,
        )  # fmt: skip
    except Exception as err:  # a failing model: summary.json says so
        summary.update(status="failed", error=" ".join(str(err).split()) or repr(err))
        write_soup(out, summary)
        raise
    summary.update(
        status="complete", endpoints=result.endpoints, wall_time_s=round(time.time() - started, 3)
    )
    write_soup(out, summary, result.rows)
    names = list(summary["soup"]["members"])
    if args.plots:
        draw_soup(out, result.rows, opts.spec.splits, names)
    for split in opts.spec.splits:
        print_soup(result.rows, split, names)
    print(f"\nresults: {out}/{SOUP_FILE}, {out}/summary.json")
    return 0


def soup_summary(
    args: Any, opts: Options, pair: Pair, calibration: torch.Tensor | None,
    weights: list[float], rests: list[int],
) -> dict[str, Any]:  # fmt: skip
    """summary.json of a soup that starts: a pair's fields (but no alpha grid), the members and
    how they were made, and ``soup``: k, each member's file and weight, the rest members."""
    summary = start_summary(args, opts, pair, calibration, 1)
    del summary["alphas"]  # a soup is measured at its weights, on no alpha grid
    names = [member_name(i) for i in range(len(weights))]
    summary["members"], summary["pairing"] = describe_members(pair, len(weights))
    summary["soup"] = {
        "k": len(weights),
        "members": dict(zip(names, member_files(pair), strict=True)),
        "weights": dict(zip(names, weights, strict=True)),
        "rest_from": [names[r] for r in rests],
        "barrier": "the soup on the group (rest from rest_from) minus the weighted mean of the "
        "members' own values",
    }
    return summary


def describe_members(pair: Pair, k: int) -> tuple[str, str]:
    """summary.json's ``members`` and ``pairing`` for a soup: which files hold the networks, and
    how they were made (as recorded by ``lwlc fit`` for a paired checkpoint)."""
    if len(pair.cks) == 1:
        return "a and b of one paired checkpoint", describe_pairing(pair.cks)
    return (
        f"{k} files, members a, b, ... in the order given",
        f"{k} separate checkpoints (how they were trained is not recorded in them)",
    )


def member_files(pair: Pair) -> list[str]:
    """The file each member was read from, in member order (a pair's two from one file)."""
    return [ck.path for ck in pair.cks] * (2 if len(pair.cks) == 1 else 1)
