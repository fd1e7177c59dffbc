"""The networks a command works on (``lwlc analyze``, ``lwlc merge``): flags, files, configs.

A command takes either one paired checkpoint (``--ckpt``, its members A and B) or two
single-network files (``--ckpt-a``, ``--ckpt-b``), or (``lwlc merge``, ``lwlc analyze --soup``) k
single-network files; model and data classes come from the command line or, failing that, from
the configs recorded in the checkpoints.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from torch import Tensor, nn

from lwlc.core.errors import LwlcError
from lwlc.formats.checkpoints import Checkpoint, build_model, instantiate, read_checkpoint
from lwlc.formats.io import unpickling_error
from lwlc.formats.vouch import vouch

VOUCH_MODEL = "pass --model explicitly, or --trust-class-paths if you trust the file"
VOUCH_DATA = "pass --data explicitly, or --trust-class-paths if you trust the file"

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule


class DataModuleLike(Protocol):
    """What ``--data`` names: a data module (Lightning's, or any class with
    ``train_dataloader``). A protocol, so that declaring ``--data`` imports no Lightning:
    ``--help`` and argument errors answer at once; the named class is imported when used."""

    def train_dataloader(self) -> Any: ...


def add_network_arguments(
    parser: ArgumentParser, data_help: str = "data module (default: from the checkpoint's config)"
) -> None:
    """Add --ckpt-a, --ckpt-b, --model, --data and --trust-class-paths (each command adds its
    own --ckpt: one pair, or several files)."""
    from jsonargparse import ActionYesNo

    for member in ("a", "b"):
        parser.add_argument(
            f"--ckpt-{member}",
            type=str | None,
            default=None,
            help=f"checkpoint (or state dict / .safetensors) of model {member.upper()}",
        )
    parser.add_subclass_arguments(
        nn.Module,
        "model",
        required=False,
        help="model class (default: from the checkpoint's config)",
    )
    parser.add_subclass_arguments(DataModuleLike, "data", required=False, help=data_help)
    parser.add_argument(
        "--trust-class-paths",
        action=ActionYesNo(no_prefix="no-"),
        default=False,
        help="allow model/data classes outside lwlc/torch/torchvision",
    )


def check_sources(args: Any, verb: str) -> None:
    """Refuse both input forms at once, or neither (``verb`` says what the command would do)."""
    if args.ckpt and (args.ckpt_a or args.ckpt_b):
        raise LwlcError("give either --ckpt PAIR or --ckpt-a A --ckpt-b B, not both")
    if not args.ckpt and not (args.ckpt_a and args.ckpt_b):
        raise LwlcError(
            f"nothing to {verb}: give --ckpt PAIR.ckpt or both --ckpt-a A.ckpt and --ckpt-b B.ckpt"
        )


def csv_list(value: str | Sequence[object]) -> list[str]:
    """The non-empty, stripped items of an option given comma-separated or as a YAML list."""
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [t.strip() for t in items if t.strip()]


def read_network(path: str) -> Checkpoint:
    """A checkpoint file, or a local Hugging Face model directory (the ``lm`` extra)."""
    if Path(path).is_dir() and (Path(path) / "config.json").is_file():
        from lwlc.formats.hf import read_hf_checkpoint

        try:
            return read_hf_checkpoint(path)
        except pickle.UnpicklingError as err:  # transformers reads *.bin with weights_only=True
            raise unpickling_error(path, err) from None
    return read_checkpoint(path)


class Members(NamedTuple):
    """The two networks' state dicts, the checkpoints read, and the model config found in them."""

    a: dict[str, Tensor]
    b: dict[str, Tensor]
    checkpoints: list[Checkpoint]
    model_config: dict[str, Any] | None


def read_members(args: Any, verb: str = "compare") -> Members:
    """A and B from ``--ckpt PAIR`` or from ``--ckpt-a A --ckpt-b B`` (``verb``: the command's)."""
    if args.ckpt:
        ck = read_network(args.ckpt)
        if not ck.paired:
            raise LwlcError(
                f"{args.ckpt} holds a single network, not a pair: "
                f"use --ckpt-a {args.ckpt} --ckpt-b OTHER"
            )
        return Members(ck.members["a"], ck.members["b"], [ck], saved_model_config(args, [ck]))
    cks = [read_network(args.ckpt_a), read_network(args.ckpt_b)]
    for ck, flag in zip(cks, ("--ckpt-a", "--ckpt-b"), strict=True):
        if ck.paired:
            raise LwlcError(
                f"{flag} {ck.path} is a paired checkpoint (two networks): "
                f"use --ckpt {ck.path} to {verb} its members"
            )
    return Members(
        cks[0].members["model"], cks[1].members["model"], cks, saved_model_config(args, cks)
    )


class Networks(NamedTuple):
    """The k networks' state dicts in order (a, b, c, ...), the checkpoints read, and the model
    config found in them."""

    states: list[dict[str, Tensor]]
    checkpoints: list[Checkpoint]
    model_config: dict[str, Any] | None


def read_networks(args: Any, verb: str = "compare") -> Networks:
    """The networks of ``--ckpt PAIR`` (its A and B), ``--ckpt M1 M2 ...`` (single-network files,
    in order) or ``--ckpt-a A --ckpt-b B`` (``lwlc merge``, ``lwlc analyze --soup``); the model
    config is vouched for as :func:`read_members` does."""
    files = [args.ckpt] if isinstance(args.ckpt, str) else list(args.ckpt or [])
    if len(files) == 1:
        ck = read_network(files[0])
        if not ck.paired:
            raise LwlcError(
                f"{files[0]} holds a single network, not a pair: give a paired checkpoint, or "
                "2 or more single-network files"
            )
        return Networks([ck.members["a"], ck.members["b"]], [ck], saved_model_config(args, [ck]))
    if not files:
        m = read_members(args, verb)
        return Networks([m.a, m.b], m.checkpoints, m.model_config)
    cks = [read_network(path) for path in files]
    for ck in cks:
        if ck.paired:
            raise LwlcError(
                f"{ck.path} is a paired checkpoint: give it alone as --ckpt PAIR, or give "
                "single-network files"
            )
    return Networks([ck.members["model"] for ck in cks], cks, saved_model_config(args, cks))


def weights_value(value: object) -> list[float] | None:
    """--weights as a list of numbers (a YAML list or comma-separated text)."""
    if value is None or not isinstance(value, str):
        return value  # type: ignore[return-value]
    try:
        return [float(t) for t in value.strip("[] ").split(",")]
    except ValueError:
        raise LwlcError(f"--weights {value!r} must be numbers, e.g. 0.5,0.25,0.25") from None


def saved_model_config(args: Any, cks: list[Checkpoint]) -> dict[str, Any] | None:
    """The first model config recorded in ``cks``; unless --model or --trust-class-paths makes
    it irrelevant or trusted, that checkpoint's whole saved hyper-parameters (``_instantiator``
    and strings holding YAML too) must name nothing foreign, checked before any import."""
    ck = next((ck for ck in cks if ck.model_config), None)
    if ck is None:
        return None
    if class_config(args.model) is None and not args.trust_class_paths:
        vouch(ck.saved.get("hyper_parameters"), f"{ck.path}'s saved model config", VOUCH_MODEL)
    return ck.model_config


def class_config(value: Any) -> dict[str, Any] | None:
    """A jsonargparse subclass value (Namespace) as a plain ``{class_path, init_args}`` dict."""
    if value is None:
        return None
    d = value.as_dict() if hasattr(value, "as_dict") else dict(value)
    return d if d.get("class_path") else None


def model_config(args: Any, found: dict[str, Any] | None) -> dict[str, Any]:
    """--model if given, else the config ``found`` in the checkpoints; refused when neither."""
    config = class_config(args.model) or found
    if config is None:
        raise LwlcError(
            "the checkpoint records no model config (plain state dict?): pass --model CLASS, "
            "e.g. --model lwlc.models.MLP"
        )
    return config


def data_config(args: Any, cks: list[Checkpoint]) -> dict[str, Any] | None:
    """--data if given, else the first data config recorded in the checkpoints (or None), whose
    whole saved data hyper-parameters must then name nothing foreign (unless trusted)."""
    if class_config(args.data) is not None:
        return class_config(args.data)
    ck = next((ck for ck in cks if ck.data_config), None)
    if ck is None:
        return None
    if not args.trust_class_paths:
        saved = ck.saved.get("datamodule_hyper_parameters")
        vouch(saved, f"{ck.path}'s saved data config", VOUCH_DATA)
    return ck.data_config


def build_network(args: Any, config: dict[str, Any], state: dict[str, Tensor]) -> nn.Module:
    """The model of ``config``, checked to fit ``state`` (a class named by --model is trusted)."""
    model = build_model(
        config, trust=args.trust_class_paths or class_config(args.model) is not None
    )
    if type(model) is nn.Sequential and not len(model) and state:
        raise LwlcError(
            "torch.nn.Sequential takes its layers positionally, which a config cannot name: use "
            "--model lwlc.models.Sequential with --model.init_args.layers, a list of "
            "class_path/init_args (same state-dict keys)"
        )
    check_model(model, state)
    return model


def build_data(args: Any, config: dict[str, Any]) -> LightningDataModule:
    """The data module of ``config`` (a class named by --data is trusted)."""
    from lightning.pytorch import LightningDataModule

    trust = args.trust_class_paths or class_config(args.data) is not None
    return instantiate(config, LightningDataModule, "data", trust=trust)


def check_model(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Raise naming the first key or shape where the built model and the checkpoint differ."""
    expected = model.state_dict()
    only_model = sorted(set(expected) - set(state))
    only_ckpt = sorted(set(state) - set(expected))
    if only_model or only_ckpt:
        which = (
            f"{only_model[0]!r} is only in the model"
            if only_model
            else f"{only_ckpt[0]!r} is only in the checkpoint"
        )
        raise LwlcError(
            f"the model config does not match the checkpoint ({which}): pass the right --model"
        )
    for k, v in expected.items():
        if v.shape != state[k].shape:
            raise LwlcError(
                f"the model config does not match the checkpoint: {k!r} is {tuple(v.shape)} in "
                f"the model, {tuple(state[k].shape)} in the checkpoint; pass the right --model "
                "(e.g. its width)"
            )


def check_fits(model: nn.Module, example: Tensor, data: str) -> None:
    """Refuse, naming both shapes, a model whose input does not take the data's samples.

    ``example`` is a batch of the data (``data`` names its module); one forward pass on it in
    eval mode tells whether the two belong together before any work is done.
    """
    import torch

    training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        first = next(
            (f"{name} {type(m).__name__}" + _layer_shape(m)
             for name, m in model.named_modules()
             if next(m.parameters(recurse=False), None) is not None),
            type(model).__name__,
        )  # fmt: skip
        reason = " ".join(str(err).split())[:160]
        raise LwlcError(
            f"the model does not fit the data: its first layer is {first}, but {data} gives "
            f"samples of shape {tuple(example.shape[1:])} ({example.dtype}); choose the matching "
            f"--model or --data ({reason})"
        ) from None
    finally:
        model.train(training)


def check_data(model: nn.Module, data: dict[str, tuple[Tensor, Tensor]], name: str) -> None:
    """Refuse (one line) data the model cannot be measured on: a split without samples, a
    sample whose input does not fit the model (:func:`check_fits`), a label outside the model's
    outputs, a NaN/Inf input. ``name`` names the data module. The model's stages are checked
    against its forward on a sample here too (``lwlc.core.stages.verify_stages``)."""
    import torch

    from lwlc.core.stages import verify_stages
    from lwlc.data.checks import check_splits

    empty = next((s for s, (_, y) in data.items() if len(y) == 0), None)
    if empty is not None:  # named before a forward pass on nothing
        check_splits({empty: data[empty]}, 1, name, may_be_empty=())
    example = next(iter(data.values()))[0][:2]
    check_fits(model, example, name)
    verify_stages(model, example)  # children or fx pieces that the forward does not equal: not used
    training = model.training
    with torch.no_grad():
        classes = model.eval()(example).shape[-1]
    model.train(training)
    check_splits(data, classes, name, may_be_empty=())


def _layer_shape(m: nn.Module) -> str:
    """What a layer takes in, for messages: ``(in 784)`` or ``(3 channels in)``."""
    if isinstance(m, nn.Linear):
        return f" (takes {m.in_features} features)"
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return f" (takes {m.in_channels} channels)"
    if isinstance(m, nn.Embedding):
        return f" (takes token ids below {m.num_embeddings})"
    return ""
