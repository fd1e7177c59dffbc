"""Command-line flags made from :class:`lwlc.core.spec.MeasureSpec`'s fields.

A measurement option is declared once, in the spec (its type, default, documentation and
checks); ``lwlc analyze`` and ``lwlc merge`` turn the fields they take into ``--dashed-flags``
here, with the spec's default and its docstring as help, so a flag cannot drift from the field.
Values are checked by the spec itself (:func:`lwlc.core.spec.from_flags`), not by the parser,
so every front end gives the same message for the same mistake.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields
from functools import cache
from typing import Any

from lwlc.core.spec import MeasureSpec


def _items(value: object) -> list[str]:
    """The stripped, non-empty items of a comma-separated string or a list."""
    if isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]"):
        value = value.strip()[1:-1]  # a YAML flow list typed on the command line: [0, 0.5, 1]
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    return [str(t).strip() for t in items if str(t).strip()]


def choice_list(value: object) -> list[str]:
    """A sequence of choices, given comma-separated (``--splits test,train``) or as a YAML list;
    a list either way, so ``--print_config`` writes a YAML list."""
    return _items(value)


def number_list(value: object) -> list[float] | object:
    """A sequence of numbers (``--alphas 0,0.5,1``) as a list of floats; a value with an item
    that is no number is kept as given, for the spec to refuse with the message every front
    end gives."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "null"):
        return None
    try:
        return [float(item) for item in _items(value)]
    except ValueError:
        return value


SEQUENCE_TYPES = {str: choice_list, float: number_list}
# A key derived from another one when that one is not given: left out of --print_config's
# output when the other is given (num_alphas beside explicit alphas would be stale).
DERIVED = {"num_alphas": "alphas"}


@cache
def field_help() -> dict[str, str]:
    """Each field's text in the ``Args:`` section of ``MeasureSpec``'s docstring, on one line
    (read by docstring-parser, which jsonargparse uses for the same purpose)."""
    from docstring_parser import parse

    params = parse(MeasureSpec.__doc__ or "").params
    return {p.arg_name: " ".join((p.description or "").split()) for p in params}


def flag(name: str) -> str:
    """The flag of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _default(name: str) -> Any:
    spec_field = next(f for f in fields(MeasureSpec) if f.name == name)
    if spec_field.default is not MISSING:
        return spec_field.default
    return spec_field.default_factory()  # type: ignore[misc]


def _parser_type(hint: Any) -> Any:
    """What the parser reads for a field: sequences as a comma string or a YAML list, choices
    (``Literal``) as plain strings (the spec checks them), the rest as annotated."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    sequence = next((a for a in [hint, *args] if typing.get_origin(a) is Sequence), None)
    if sequence is not None:
        (item,) = typing.get_args(sequence)
        return SEQUENCE_TYPES[float if item is float else str]
    if typing.get_origin(hint) is typing.Literal:
        return str
    return hint


def add_spec_arguments(parser: Any, names: Sequence[str], **defaults: Any) -> None:
    """Add a ``--flag`` for each named spec field (its default, unless given in ``defaults``)."""
    hints = typing.get_type_hints(MeasureSpec)
    for name in names:
        default = defaults.get(name, _default(name))
        if isinstance(default, tuple):
            default = list(default)
        parser.add_argument(
            flag(name), type=_parser_type(hints[name]), default=default, help=_for_flags(name)
        )
    derived = {key: given for key, given in DERIVED.items() if {key, given} <= set(names)}
    parser.derived_keys = {**getattr(parser, "derived_keys", {}), **derived}


def _for_flags(name: str) -> str:
    """A field's help as a command line reads it: ``max_samples`` -> --max-samples, and the
    other inline code marks dropped."""
    return re.sub(
        r"``([^`]+)``",
        lambda m: flag(m[1]) if m[1] in hints_of_fields() else m[1],
        field_help()[name],
    )


@cache
def hints_of_fields() -> frozenset[str]:
    """The names of the spec's fields."""
    return frozenset(f.name for f in fields(MeasureSpec))
