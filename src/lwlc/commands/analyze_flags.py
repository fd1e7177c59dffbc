"""``lwlc analyze``'s flags as a validated measurement: the MeasureSpec and the device, checked
before any file is read so that a mistake is one line before slow work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lwlc.core.errors import LwlcError
from lwlc.core.spec import MeasureSpec, from_flags
from lwlc.formats import inputs

# The measurement's flags, made from MeasureSpec's fields (--group and --custom take their own
# syntax, in lwlc.commands.analyze).
SPEC_FLAGS = (
    "plans", "group_depth", "alphas", "num_alphas", "splits", "rest_from", "bn", "bn_samples",
    "bn_batch_size", "max_samples", "batch_size", "chunk_size", "memory_budget", "precision",
    "align", "measures", "robustness_seeds",
)  # fmt: skip


@dataclass
class Options:
    """The validated measurement of one run and where it runs (checked before any file is
    read)."""

    spec: MeasureSpec
    device: torch.device


def listed(value: str | Sequence[str]) -> list[str]:
    """A repeatable option's values: one given once is a string."""
    return [value] if isinstance(value, str) else list(value)


def spec_of(args: Any) -> MeasureSpec:
    """The measurement the flags describe, validated by :class:`MeasureSpec` (the messages every
    front end gives, naming the flag: ``--batch-size must be ...``)."""
    custom: dict[str, list[str]] = {}
    for text in listed(args.custom):
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
    fields.update(custom=custom, group=listed(args.group), alphas=alphas)
    return from_flags(**fields)


def options(args: Any) -> Options:
    """Check every option that needs no file, so mistakes are reported before slow work."""
    inputs.check_sources(args, "compare")
    return Options(spec_of(args), parse_device(args.device))


def parse_device(name: str) -> torch.device:
    """``--device``: cpu, cuda, cuda:N, or auto (CUDA when there is one)."""
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
