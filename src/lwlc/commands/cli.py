"""The ``lwlc`` command: dispatches to one module per command, imported only when used.

``lwlc fit|validate|test|predict`` run lwlc's LightningCLI (``lwlc.commands.lightning_cli``);
``lwlc analyze`` and the other tools are ``lwlc.commands.<tool>.main(argv)``. Every LwlcError,
and every config error, ends as one line ``lwlc: error: <message>`` and exit code 2; ``--debug``
(or LWLC_DEBUG=1) shows the traceback instead. Nothing heavy is imported here: ``lwlc --help``
and a mistyped command answer at once.
"""

import importlib
import os
import sys
from collections.abc import Callable

from lwlc.commands.errors import config_error, fail, nearest, one_line
from lwlc.core.errors import LwlcError
from lwlc.lazy import defer_transformers

LIGHTNING_COMMANDS = {
    "fit": "train a model (a pair of networks or one network) from a config",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test split",
    "predict": "write the logits of a checkpoint",
}
TOOL_COMMANDS = {
    "analyze": "layer-wise barriers between the two networks of a checkpoint",
    "plot": "draw the figures of an analysis",
    "merge": "average chosen layers of two checkpoints into a new one",
    "experiment": "run one of the paper's experiment recipes",
}
DEBUG_FLAG = "--debug"


def _check_files(args: list[str]) -> None:
    """A --config or --ckpt_path that is missing or a folder is one line before Lightning loads
    (in the words of lwlc.formats.io, which checks the same when it reads the file)."""
    for i, arg in enumerate(args[:-1]):
        path = args[i + 1]
        if arg not in ("-c", "--config", "--ckpt_path") or "://" in path or "\n" in path:
            continue  # a URL or an inline YAML config is Lightning's to read
        if arg == "--ckpt_path" and path.split(":")[0] in ("last", "best", "hpc", "registry"):
            continue  # Lightning's names for the run's own checkpoints
        what = "checkpoint" if arg == "--ckpt_path" else f"{arg} file"
        if not os.path.exists(path):
            raise LwlcError(f"{what} {path} does not exist: check the path")
        if os.path.isdir(path):
            raise LwlcError(f"{what} {path} is a directory, not a file: give the file inside it")


def _tool(name: str) -> Callable[[list[str]], None]:
    """``lwlc.commands.<name>.main``, or a one-line LwlcError when that tool is not installed."""
    try:
        module = importlib.import_module(f"lwlc.commands.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"lwlc.commands.{name}":
            raise
        raise LwlcError(
            f"'lwlc {name}' is not available in this version (no module lwlc.commands.{name})"
        ) from None
    return module.main


def _usage() -> str:
    commands = {**LIGHTNING_COMMANDS, **TOOL_COMMANDS}
    lines = [f"  {name:<11} {text}" for name, text in commands.items()]
    return "\n".join(
        [
            "usage: lwlc <command> [options]   (lwlc <command> --help for its options)",
            "",
            "commands:",
            *lines,
            "",
            f"{DEBUG_FLAG} (or LWLC_DEBUG=1) shows tracebacks instead of one-line errors.",
        ]
    )


def _dispatch(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        _check_files(rest)
        from lwlc.commands import lightning_cache

        lightning_cache.answer(argv)  # help or unknown flags, as recorded: no Lightning
        from lwlc.commands import lightning_cli

        with lightning_cache.recording_help(argv):
            lightning_cli.run(argv)
    elif command in TOOL_COMMANDS:
        _tool(command)(rest)
    else:
        commands = [*LIGHTNING_COMMANDS, *TOOL_COMMANDS]
        guess = nearest(command, commands)
        hint = f" (did you mean {guess}?)" if guess else ""
        raise LwlcError(f"unknown command {command!r}{hint}; available: {', '.join(commands)}")


def _user_error(err: BaseException) -> LwlcError | None:
    """The LwlcError behind ``err`` (itself or a cause), if any; a full disk met by a write
    outside lwlc.formats.io (Lightning's logs, its config file) is one too."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LwlcError):
            return err
        if isinstance(err, OSError):
            from lwlc.formats.io import (
                disk_full_error,  # imports torch: only where it can be needed
            )

            full = disk_full_error(err)
            if full is not None:
                return full
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lwlc`` command."""
    defer_transformers()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get("LWLC_DEBUG") == "1"
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    from jsonargparse import ArgumentError

    try:
        _dispatch(argv)
    except ArgumentError as err:
        if debug:
            raise
        fail(f"invalid configuration: {config_error(str(err))}")
    except Exception as err:
        user_error = _user_error(err)
        if debug or user_error is None:
            raise
        fail(one_line(str(user_error)))
    finally:  # the folders this command locked (lwlc.formats.lock), however it ended
        if "lwlc.formats.lock" in sys.modules:
            sys.modules["lwlc.formats.lock"].release_held()


if __name__ == "__main__":
    main()
