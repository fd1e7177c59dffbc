"""``lwlc fit|validate|test|predict --help`` and unknown-flag errors without importing Lightning.

LightningCLI builds its parser from Lightning's classes, and importing Lightning (with the
torchmetrics, torchvision, scipy and matplotlib it pulls) takes about twice as long as torch
itself. The answer to ``lwlc fit --help`` and the option list behind ``unrecognized arguments``
do not change until Lightning, jsonargparse, torch or lwlc do, so a real run of the command
records them in a cache folder, and later runs answer from there, printing exactly what the real
LightningCLI printed (tests/commands/test_lightning_cache.py compares the two):

- the help, recorded when the real command answers a bare ``lwlc <command> --help`` (keyed also
  by the terminal's width and the program's name, which the text depends on);
- each command's ``--long`` options, and which of them take nested keys (a class's
  ``--model.init_args.x``), recorded whenever LwlcCLI parses a command line.

Only command lines the record decides for certain are answered: a bare ``--help``, or flags that
are all unknown (no known option, no key under a class-typed option, no short option), besides
the config files named (``--config F``: a typo after a config fails whatever the file holds);
anything else runs the real LightningCLI. The cache is ``$LWLC_CACHE_DIR`` (empty: no
cache), else ``$XDG_CACHE_HOME/lwlc`` or ``~/.cache/lwlc``; a missing, stale or unreadable
entry falls back to the real command, and one that cannot be written is skipped.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lwlc.commands.errors import option_names, suggest

HELP = (["-h"], ["--help"])  # a bare help request, after the command
# The packages whose versions shape LightningCLI's parser and its help text.
PACKAGES = ("lightning", "jsonargparse", "torch", "docstring-parser", "lightning-utilities")
FLAG = re.compile(r"--[A-Za-z_][\w.-]*")


def cache_dir() -> Path | None:
    """The cache folder, or None when ``LWLC_CACHE_DIR`` is set empty (no cache)."""
    given = os.environ.get("LWLC_CACHE_DIR")
    if given is not None:
        return Path(given) if given else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lwlc"


@functools.cache
def installed() -> dict[str, Any]:
    """What every entry depends on: the packages' versions, this Python, lwlc's own source
    (each file's size and modification time) and jsonargparse's settings from the environment."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    package = Path(__file__).resolve().parents[1]
    source = sorted(
        (str(p.relative_to(package)), p.stat().st_mtime_ns, p.stat().st_size)
        for p in package.rglob("*.py")
    )
    env = {k: v for k, v in os.environ.items() if k.startswith("JSONARGPARSE_")}
    return {"versions": versions, "python": sys.version, "prefix": sys.prefix,
            "lwlc": hashlib.sha256(repr(source).encode()).hexdigest(), "env": env}  # fmt: skip


def _key(command: str, kind: str) -> dict[str, Any]:
    """The key of one entry: ``kind`` "help" also depends on the width and the program name."""
    key = {"command": command, "kind": kind, **installed()}
    if kind == "help":
        key["columns"] = shutil.get_terminal_size().columns
        key["prog"] = os.path.basename(sys.argv[0])
    return key


def _entry(command: str, kind: str) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(json.dumps(_key(command, kind), sort_keys=True).encode()).hexdigest()
    return folder / f"{command}-{kind}-{digest[:24]}.json"


def read(command: str, kind: str) -> Any:
    """The value recorded for ``command`` and ``kind`` under the current key, or None."""
    path = _entry(command, kind)
    try:
        with open(path, encoding="utf-8") as file:  # type: ignore[arg-type]
            saved = json.load(file)
    except (OSError, TypeError, ValueError):
        return None
    same = isinstance(saved, dict) and saved.get("key") == _key(command, kind)
    return saved.get("value") if same else None


def write(command: str, kind: str, value: Any) -> None:
    """Record ``value`` (a temporary file renamed into place); skipped if it cannot be written."""
    path = _entry(command, kind)
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump({"key": _key(command, kind), "value": value}, file)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def answer(argv: list[str]) -> None:
    """Answer ``lwlc <command> ...`` from the cache when it can (help: printed, exit 0; unknown
    flags: jsonargparse's ArgumentError, as the real parser raises it); else return."""
    command, args = argv[0], argv[1:]
    if args in HELP:
        text = read(command, "help")
        if isinstance(text, str):
            sys.stdout.write(text)
            sys.exit(0)
        return
    if command == "fit":  # lwlc fit's own flag, dropped before LightningCLI (lightning_cli.run)
        args = [a for a in args if a != "--overwrite"]
    record = read(command, "options")
    whole = isinstance(record, dict) and {"names", "all_names", "dests"} <= record.keys()
    message = unknown_flags(without_configs(args), record) if whole else None
    if message is not None:
        from jsonargparse import ArgumentError

        raise ArgumentError(None, message)


def without_configs(args: list[str]) -> list[str]:
    """``args`` without the config files they name (``--config F``, ``-c F``, ``--config=F``):
    a flag unknown to the parser is left over whatever a config holds, so the command fails
    with the same message (should the file have errors too, they come at the next run)."""
    rest, i = [], 0
    while i < len(args):
        if args[i] in ("-c", "--config") and i + 1 < len(args):
            i += 2
            continue
        if not args[i].startswith("--config="):
            rest.append(args[i])
        i += 1
    return rest


def unknown_flags(args: list[str], record: dict[str, Any]) -> str | None:
    """The real parser's message for ``args`` when every flag among them is certainly unknown to
    it (``record``: from :func:`record_options`), else None. Such flags and the values after them
    are all left over (a command has no positional argument), and the suggestion is the nearest
    option of the command, else of the whole parser, as ``ShortHelpParser.error`` makes it."""
    flags = [a for a in args if a.startswith("-")]
    if not flags or not all(_certainly_unknown(flag, record) for flag in flags):
        return None
    message = f"unrecognized arguments: {' '.join(args)}"
    return suggest(suggest(message, record["names"]), record["all_names"])


def _certainly_unknown(flag: str, record: dict[str, Any]) -> bool:
    """Whether the parser leaves ``flag`` (``--name`` or ``--name=value``) over: not one of its
    options, and no dotted prefix of it is a class- or type-hinted option (jsonargparse hands
    ``--model.init_args.x`` to ``--model``; a nested group's ``--trainer`` does not)."""
    name = flag.partition("=")[0]
    if not FLAG.fullmatch(name) or name in record["names"] or name[2:] in record["dests"]:
        return False
    parts = name[2:].split(".")
    for n in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in record["dests"]:
            return not record["dests"][prefix]
    return True


def record_options(parser: Any) -> None:
    """Record each subcommand's options of LightningCLI's ``parser`` (when not recorded yet):
    its ``--long`` names, every name of the whole parser, and each destination with whether it
    may take nested keys (:func:`takes_nested_keys`)."""
    subcommands = getattr(parser, "_subcommands_action", None)
    if cache_dir() is None:
        return
    every = option_names(parser)
    for command, sub in (getattr(subcommands, "choices", None) or {}).items():
        if read(command, "options") is not None:
            continue
        dests = {a.dest: takes_nested_keys(a, sub) for a in sub._actions if a.option_strings}
        write(command, "options", {"names": option_names(sub), "all_names": every, "dests": dests})


def takes_nested_keys(action: Any, parser: Any) -> bool:
    """Whether jsonargparse may take ``--<dest>.x`` as a key under ``action``: True but for the
    loader of a nested group's config (``--trainer``, whose options are all listed), which is
    known by its class's name and its having no type hint: should jsonargparse rename either,
    every option counts as taking nested keys, and such flags go to the real parser."""
    loader = type(action).__name__ == "_ActionConfigLoad"
    grouped = action.dest in getattr(parser, "groups", {})
    return not (loader and grouped and not getattr(action, "_typehint", None))


@contextlib.contextmanager
def recording_help(argv: list[str]) -> Iterator[None]:
    """Around the real command: a bare ``<command> --help`` is captured, recorded and printed
    (exactly as written); anything else runs untouched."""
    if argv[1:] not in HELP:
        yield
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    except SystemExit as exit:
        if exit.code in (0, None) and captured.getvalue():
            write(argv[0], "help", captured.getvalue())
        raise
    finally:
        sys.stdout.write(captured.getvalue())
