"""Argument errors and short help shared by every ``lwlc`` command.

Commands import this module, never the dispatcher (``lwlc.commands.cli``), so that no command
imports the module that loads commands by name. It imports neither torch nor Lightning: a
mistyped flag or ``--help`` answers before any heavy import.
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

from lwlc.core.errors import LwlcError

KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false"}


def one_line(message: str) -> str:
    """A multi-line message squeezed onto one line."""
    return re.sub(r"\s+", " ", message).strip()


def fail(message: str) -> NoReturn:
    """Print ``lwlc: error: <message>`` on stderr and exit with code 2."""
    print(f"lwlc: error: {message}", file=sys.stderr)
    sys.exit(2)


def nearest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to a mistyped ``name`` (difflib), or None when none is close."""
    found = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return found[0] if found else None


def config_error(message: str) -> str:
    """jsonargparse's error as one short line: the full key at fault and the innermost reason.

    For a subclass-typed key jsonargparse lists why each alternative of ``Union[cls, None]``
    failed; only the class's reason is kept, e.g.
    ``model.init_args.model: Option 'widht' is not accepted``.
    """
    full = one_line(message)
    text = full.split(" - Expected a <class 'NoneType'>")[0]
    keys = re.findall(r'Parser key "([^"]+)"', text)
    wrong = re.search(r"Expected a <class '(int|float|bool)'>.*?(?:Given|Got) value: (\S+)", full)
    if keys and wrong and "class_path" not in full:
        kind, value = wrong.groups()
        note = (
            " (NaN and infinity are not numbers here)"
            if value.lower().lstrip("+-") in ("nan", "inf", "infinity")
            else ""
        )
        return f"{'.init_args.'.join(keys)}: expected {KINDS[kind]}, got {value!r}{note}"
    reason = re.split(r"Problem with given class_path '[^']*': |Parser key \"[^\"]+\": ", text)[-1]
    reason = reason.split("Errors: - ")[-1]
    return f"{'.init_args.'.join(keys)}: {reason}" if keys else reason


def argument_error(err: Exception, command: str) -> LwlcError:
    """A tool's (``lwlc analyze``, ...) jsonargparse error as one line naming the flag."""
    reason = config_error(str(err))
    flag = re.match(r"([\w.]+): ", reason)
    if flag and "." not in flag.group(1):
        reason = f"--{flag.group(1).replace('_', '-')}{reason[flag.end(1) :]}"
    return LwlcError(f"{reason} (see lwlc {command} --help)")


def with_suggestion(message: str, parser: Any) -> str:
    """``message`` plus ``did you mean --x?`` when it names an unknown flag or key of ``parser``
    (a jsonargparse parser) that is close to a valid one."""
    return suggest(message, option_names(parser))


def suggest(message: str, options: list[str]) -> str:
    """``message`` plus ``did you mean --x?`` when it names an unknown flag or key close to one
    of ``options`` (a parser's ``--long`` options, :func:`option_names`)."""
    unknown = re.search(
        r"(?:unrecognized arguments:|does not accept (?:nested key|option)) '?(--)?([\w.-]+)",
        message,
        re.I,
    ) or re.search(r"Option '(--)?([\w.-]+)' is not accepted", message)
    if unknown is None or "did you mean" in message:
        return message
    dashes, name = unknown.groups()
    names = [n.lstrip("-") for n in options]
    if not dashes:  # a key inside a class's init_args: compare with the keys themselves
        names = [n.rsplit(".", 1)[-1] for n in names]
    guess = nearest(name, names)
    return f"{message}; did you mean {dashes or ''}{guess}?" if guess else message


def option_names(parser: Any) -> list[str]:
    """Every ``--long`` option of a jsonargparse parser and of its subcommands' parsers."""
    names = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    for action in parser._actions:
        for sub in (getattr(action, "choices", None) or {}).values():
            if hasattr(sub, "_actions"):
                names += option_names(sub)
    return names


@functools.cache
def short_help(parser_class: type) -> type:
    """``parser_class`` (a jsonargparse parser) whose help leaves out the list of every known
    subclass of a class-typed option (``--model`` listed every ``nn.Module`` in torch, 700 lines
    of ``--help``) and the types beside the defaults, and which takes no abbreviated flag
    (``--trainer.max_epoch`` is not ``--trainer.max_epochs``). A subclass of the parser, since
    ``--model.help CLASS`` builds a parser of the same type."""
    from jsonargparse import DefaultHelpFormatter

    class ShortHelp(DefaultHelpFormatter):
        def _get_help_string(self, action: Any) -> str:
            text = re.sub(r", known subclasses: [^)]*", "", super()._get_help_string(action))
            return re.sub(r"\(type: .*?, default: ", "(default: ", text)

    class ShortHelpParser(parser_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", ShortHelp)
            kwargs["allow_abbrev"] = False
            super().__init__(*args, **kwargs)

        def dump(self, cfg: Any, *args: Any, **kwargs: Any) -> str:
            """The config as YAML, without a derived key whose source is given
            (``derived_keys``: ``{"num_alphas": "alphas"}``)."""
            stale = [k for k, given in getattr(self, "derived_keys", {}).items()
                     if cfg.get(given) is not None and k in cfg]  # fmt: skip
            if stale:
                cfg = cfg.clone()
                for key in stale:
                    del cfg[key]
                kwargs["skip_check"] = True
            return super().dump(cfg, *args, **kwargs)

        def error(self, message: str, ex: Exception | None = None) -> NoReturn:
            super().error(with_suggestion(message, self), ex)

    return ShortHelpParser
