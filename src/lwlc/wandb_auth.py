"""Whether W&B can log in without asking, and the mode a run starts in (never a login prompt).

Reads the sources ``wandb`` reads before it would prompt (environment, settings files, netrc),
without importing ``wandb`` or touching the network.
"""

from __future__ import annotations

import configparser
import netrc
import os
import pathlib
from urllib.parse import urlparse

from lwlc.core.errors import LwlcError
from lwlc.notices import warn

MODES = ("online", "offline", "disabled")
DEFAULT_HOST = "https://api.wandb.ai"


def settings_files() -> list[pathlib.Path]:
    """W&B's settings files, global then workspace (the later one wins), as ``wandb`` reads them."""
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or "~/.config/wandb"
    workspace = pathlib.Path(os.environ.get("WANDB_DIR") or ".", "wandb", "settings")
    return [pathlib.Path(config_dir, "settings").expanduser(), workspace.expanduser()]


def file_settings() -> dict[str, str]:
    """The ``[default]`` section of W&B's settings files; unreadable files count as empty."""
    merged: dict[str, str] = {}
    for path in settings_files():
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
            merged.update(parser.items("default"))
        except (OSError, configparser.Error):
            continue
    return merged


def netrc_path() -> pathlib.Path:
    """The netrc file W&B reads: ``$NETRC``, else ``~/.netrc``, else ``~/_netrc``."""
    if os.environ.get("NETRC"):
        return pathlib.Path(os.environ["NETRC"]).expanduser()
    unix = pathlib.Path("~/.netrc").expanduser()
    windows = pathlib.Path("~/_netrc").expanduser()
    return windows if not unix.exists() and windows.exists() else unix


def has_credentials() -> bool:
    """Whether W&B finds credentials without asking, from the sources it reads before it would
    prompt: ``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE``, an ``api_key`` in its settings
    files, or the netrc entry of the W&B host (``WANDB_BASE_URL``, the settings' ``base_url`` or
    api.wandb.ai). Nothing here prompts or touches the network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    settings = file_settings()
    if settings.get("api_key"):
        return True
    host = os.environ.get("WANDB_BASE_URL") or settings.get("base_url") or DEFAULT_HOST
    try:
        entry = netrc.netrc(netrc_path()).authenticators(urlparse(host).netloc)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def choose_mode(mode: str | None) -> str:
    """``mode``, else ``$WANDB_MODE``, else online with credentials and offline without.

    Online without credentials would stop at W&B's login prompt under a terminal (no timeout
    applies there), so it becomes offline with one warning saying how to log in.
    """
    chosen = mode or os.environ.get("WANDB_MODE") or ("online" if has_credentials() else "offline")
    chosen = {"dryrun": "offline", "run": "online"}.get(chosen, chosen)
    if chosen not in MODES:
        raise LwlcError(f"unknown W&B mode {chosen!r}; choose from {', '.join(MODES)}")
    if chosen == "online" and not has_credentials():
        warn(
            "W&B mode is online but no W&B credentials were found (WANDB_API_KEY, ~/.netrc); "
            "logging offline instead, without waiting for a login prompt: run `wandb login` "
            "once (or set WANDB_API_KEY), and upload this run later with `wandb sync`"
        )
        return "offline"
    return chosen
