"""What a saved config may import: decided on the fully expanded config, before any import.

A checkpoint's hyper-parameters reach jsonargparse (lwlc's model and data builders, and
LightningCLI's ``--ckpt_path``), which imports every class or function a value names, wherever
it stands: a ``class_path`` at any depth, a bare ``"package.Class"`` string, a string holding YAML
or JSON (``"[{class_path: pkg.Net}]"``, parsed where a list or dict is expected) and a string
naming a YAML file (read as a config). :func:`expand` unfolds all of these the way jsonargparse
would, :func:`named_imports` lists every import path of the result, and :func:`vouch` refuses
the first one that neither lwlc, torch.nn, torchvision.models nor the user vouched for. A string
that could not be unfolded but mentions ``class_path`` is refused too: what jsonargparse might
make of it is not guessed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lwlc.core.errors import LwlcError

TRUSTED_PREFIXES = ("lwlc.", "torch.nn.", "torchvision.models.")
# Lightning's own instantiator, which lwlc's checkpoints record for ``load_from_checkpoint``.
TRUSTED_NAMES = frozenset({"lightning.pytorch.cli.instantiate_module"})
# keys whose string value is an import path (jsonargparse's and Lightning's)
IMPORT_KEYS = frozenset({"class_path", "_class_path", "_instantiator"})
DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
# a config file a string may name is read only up to this size (larger is not a config)
MAX_CONFIG_FILE = 1 << 20
OPAQUE = "<a value lwlc cannot read as plain data>"
TOO_DEEP = "<a value nested deeper than any config>"
MAX_DEPTH = 64


@dataclass(frozen=True)
class Unfolded:
    """A string value and the YAML list or mapping it holds (itself, or in the file it names)."""

    text: str
    holds: Any


def _importable_top(name: str) -> bool:
    """Whether ``name``'s top-level package exists (found without importing anything)."""
    top = name.split(".", 1)[0]
    try:
        return top in sys.modules or importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _load_yaml(text: str) -> Any:
    """``text`` parsed as YAML (JSON included), or ``text`` itself when it is not YAML."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _file_text(value: str) -> str | None:
    """The text of the file ``value`` names, if it names a small readable one."""
    if "\n" in value or len(value) > 4096 or not os.path.isfile(value):
        return None
    try:
        if os.path.getsize(value) > MAX_CONFIG_FILE:
            return None
        with open(value, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def expand(value: Any, depth: int = 0) -> Any:
    """``value`` with every string that holds a YAML/JSON list or mapping, or names a file that
    holds one, replaced by what it holds (recursively): the config jsonargparse could build.

    A string that is not plain data but mentions ``class_path``, or anything nested deeper than
    :data:`MAX_DEPTH` (:data:`TOO_DEEP`), becomes :data:`OPAQUE`.
    """
    if depth > MAX_DEPTH:  # deeper than any real config: a file naming itself, or an attack
        return TOO_DEEP
    if isinstance(value, dict):
        return {k: expand(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [expand(v, depth + 1) for v in value]
    if not isinstance(value, str):
        return value
    text = _file_text(value)
    parsed = _load_yaml(value if text is None else text)
    if isinstance(parsed, (dict, list)) or (isinstance(parsed, str) and parsed != value):
        return Unfolded(value, expand(parsed, depth + 1))  # a quoted or padded name included
    if "class_path" in (value if text is None else text):
        return OPAQUE
    return value


def named_imports(obj: Any, where: str = "") -> list[tuple[str, str]]:
    """Every import path a config or hyper-parameter dict names, with where it stands.

    That is each ``class_path``/``_class_path``/``_instantiator`` value at any depth, and each bare
    string that jsonargparse (or Lightning) could resolve to a class or function: a dotted name
    whose top-level package is installed (``"package.Class"``; ``"wiki.txt"`` is not one).
    Strings holding YAML or naming a config file are read first (:func:`expand`).
    """
    return _named(expand(obj), where)


def _named(obj: Any, where: str) -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        found = []
        for key, value in obj.items():
            at = f"{where}.{key}" if where else str(key)
            if key in IMPORT_KEYS and isinstance(value, str):
                found.append((value, at))
            else:
                found += _named(value, at)
        return found
    if isinstance(obj, list):
        return [f for i, value in enumerate(obj) for f in _named(value, f"{where}[{i}]")]
    if isinstance(obj, Unfolded):
        return _named(obj.holds, f"{where} (a string holding YAML)")
    if obj in (OPAQUE, TOO_DEEP):
        return [(obj, where)]
    if isinstance(obj, str) and DOTTED_NAME.fullmatch(obj) and _importable_top(obj):
        return [(obj, where)]
    return []


def class_paths(obj: Any) -> list[str]:
    """Every import path named in a nested config (see :func:`named_imports`)."""
    return [name for name, _ in named_imports(obj)]


def vouch(config: Any, source: str, remedy: str, allowed: Iterable[str] = ()) -> None:
    """Refuse ``config`` (from ``source``) in one line if it names any import path that is neither
    lwlc's, torch.nn's, torchvision.models' nor in ``allowed``; checked before anything is
    imported, since importing a module runs its code."""
    allowed = set(allowed)
    for name, where in named_imports(config):
        if len(where) > 160:
            where = f"{where[:80]} ... {where[-60:]}"
        if name == TOO_DEEP:
            raise LwlcError(
                f"{source} nests values more than {MAX_DEPTH} levels deep at {where} (a YAML file "
                f"naming itself?); lwlc imports nothing a checkpoint chooses: {remedy}"
            )
        if name == OPAQUE:
            raise LwlcError(
                f"{source} holds a string at {where} that mentions class_path but is not plain "
                f"YAML/JSON; lwlc imports nothing a checkpoint chooses: {remedy}"
            )
        if not (name.startswith(TRUSTED_PREFIXES) or name in TRUSTED_NAMES or name in allowed):
            raise LwlcError(
                f"{source} names {name!r} (at {where}), outside lwlc/torch.nn/torchvision.models; "
                f"lwlc imports nothing a checkpoint chooses: {remedy}"
            )
