"""Checkpoint contents -> the members' state dicts and the configs to rebuild model and data.

Understands checkpoints of ``lwlc fit`` (paired: ``net_a.*``/``net_b.*``; single: ``net.*``),
plain state dicts and safetensors files. Model and data classes named inside a checkpoint are
only instantiated from trusted packages (lwlc, torch, torchvision) unless the user allows
others, because importing and calling a class chosen by a file is running its code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from lwlc.core.errors import LwlcError
from lwlc.formats.io import load_file, sha256
from lwlc.formats.vouch import class_paths, vouch

# ckpt_path values that Lightning resolves itself (to checkpoints of the run being configured)
LIGHTNING_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")
SAVED_KEYS = ("hyper_parameters", "datamodule_hyper_parameters")
MEMBER_PREFIXES = {"net_a.": "a", "net_b.": "b"}


@dataclass
class Checkpoint:
    """What one file holds: members by label ('a', 'b' or 'model'), configs, provenance."""

    path: str
    sha256: str
    members: dict[str, dict[str, Tensor]]
    model_config: dict[str, Any] | None = None
    data_config: dict[str, Any] | None = None
    pairing: dict[str, Any] | None = None
    # the saved hyper-parameters as read (model and data side), vouched for before any use
    saved: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def paired(self) -> bool:
        return set(self.members) == {"a", "b"}


def _strip(key: str) -> str:
    """Drop torch.compile's ``_orig_mod.`` wrapper from a key."""
    return key.replace("_orig_mod.", "")


def _class_config(hparams: dict[str, Any]) -> dict[str, Any] | None:
    """LightningCLI's flat ``{_class_path, **init_args}`` -> ``{class_path, init_args}``."""
    if not isinstance(hparams, dict) or "_class_path" not in hparams:
        return None
    init = {k: v for k, v in hparams.items() if not k.startswith("_")}
    return {"class_path": hparams["_class_path"], "init_args": init}


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load ``path`` safely and split it into members."""
    obj = load_file(path)
    if isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        hparams = obj.get("hyper_parameters") or {}
    else:
        state, hparams = obj, {}
    if not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise LwlcError(
            f"{path} holds no state dict of tensors: give a checkpoint from lwlc fit, a "
            "state_dict .pt or a .safetensors file"
        )
    if any(k.startswith(tuple(MEMBER_PREFIXES)) for k in state):
        members = {
            label: {_strip(k[len(prefix) :]): v for k, v in state.items() if k.startswith(prefix)}
            for prefix, label in MEMBER_PREFIXES.items()
        }
        if not all(members.values()):
            raise LwlcError(
                f"{path} holds only one member of a pair: it is damaged, use another checkpoint"
            )
    elif any(k.startswith("net.") for k in state):
        members = {"model": {_strip(k[4:]): v for k, v in state.items() if k.startswith("net.")}}
    else:
        members = {"model": {_strip(k): v for k, v in state.items()}}
    model_cfg = hparams.get("model") if isinstance(hparams.get("model"), dict) else None
    return Checkpoint(
        path=str(path),
        sha256=sha256(path),
        members=members,
        model_config=model_cfg,
        data_config=_class_config(obj.get("datamodule_hyper_parameters") or {}),
        pairing=obj.get("lwlc_pairing"),
        saved={k: obj.get(k) for k in SAVED_KEYS if obj.get(k)},
    )


def instantiate(config: dict[str, Any], base: type, what: str, trust: bool = False) -> Any:
    """Build ``{class_path, init_args}`` with jsonargparse, refusing (before any import) a config
    that names a class or function outside lwlc/torch.nn/torchvision.models anywhere in it."""
    class_path = str(config.get("class_path", ""))
    if not trust:
        vouch(
            config,
            f"the checkpoint's {what} config",
            f"pass --{what} explicitly, or --trust-class-paths if you trust the file",
        )
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, what, fail_untyped=False)
    try:
        cfg = parser.parse_object({what: config})
        return getattr(parser.instantiate_classes(cfg), what)
    except Exception as err:  # jsonargparse reports every config problem with its own types
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LwlcError(
            f"cannot build {what} {class_path!r} from its config: {msg[:300]}"
        ) from None


def build_model(config: dict[str, Any], trust: bool = False) -> nn.Module:
    """The model (a plain nn.Module) described by ``config``."""
    return instantiate(config, nn.Module, "model", trust)


def check_lightning_checkpoint(
    path: str | os.PathLike[str], allowed: Iterable[str] = (), paired: bool | None = None
) -> None:
    """Refuse, in one line, a ``--ckpt_path`` that is unreadable, needs code to unpickle, or names
    classes that neither lwlc/torch/torchvision nor the user's config vouch for.

    LightningCLI builds the model from the checkpoint's ``hyper_parameters``, so a class named
    there is imported and called: only known or user-configured classes may appear.
    """
    obj = load_file(path)
    if not isinstance(obj.get("state_dict"), dict):
        raise LwlcError(
            f"{path} is not a Lightning checkpoint (it has no 'state_dict'): give a .ckpt "
            "written by lwlc fit"
        )
    saved = {k: obj.get(k) for k in SAVED_KEYS}
    vouch(saved, str(path), "name that class in your own config if you trust the file", allowed)
    holds_pair = any(k.startswith(tuple(MEMBER_PREFIXES)) for k in obj["state_dict"])
    if paired is not None and holds_pair != paired:
        held, trained = ("a pair", "one network") if holds_pair else ("one network", "a pair")
        raise LwlcError(
            f"{path} holds {held}, but your config trains {trained}: give a checkpoint of the "
            "same kind (lwlc analyze --ckpt-a/--ckpt-b compares single networks)"
        )


def check_lightning_run(config: Any, paired: bool | None = None) -> None:
    """Make a Lightning subcommand's checkpoint loading safe: force ``weights_only=True`` and verify
    an explicit ``ckpt_path`` with lwlc's reader before Lightning opens it.

    ``config`` is the subcommand's jsonargparse namespace (``fit``, ``validate``, ...);
    ``paired``: whether its model trains a pair (then the checkpoint must hold one).
    """
    if "weights_only" in config:
        if config.weights_only is False:
            raise LwlcError(
                "--weights_only false would let a checkpoint run code when loaded: lwlc loads "
                "tensors and plain data only; re-save a trusted checkpoint without Python objects"
            )
        config.weights_only = True
    path = config.get("ckpt_path") if "ckpt_path" in config else None
    if path and str(path).split(":")[0] not in LIGHTNING_CKPT_KEYWORDS:
        check_lightning_checkpoint(path, class_paths(config.as_dict()), paired)
