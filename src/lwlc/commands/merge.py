"""``lwlc merge``: write the model averaged on chosen layers of two networks as a new checkpoint.

The merged model is the engine's interpolated model (``lwlc.core.interpolation.interpolate``) at one
alpha on a custom path over the chosen groups, the rest from A or B; optionally B is first
permuted to match A (weight matching) and BatchNorm statistics are recomputed on training data.
A ``.ckpt``/``.pt`` output is a ``ClassifierModule`` checkpoint (``net.*`` keys, the model and
data configs, Lightning's version key), so ``lwlc validate/test --ckpt_path`` and plain
``torch.load(weights_only=True)`` read it; a ``.safetensors`` output holds the bare state dict.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from lwlc.commands.errors import argument_error, short_help
from lwlc.commands.spec_flags import add_spec_arguments
from lwlc.core import layers
from lwlc.core.alignment import align
from lwlc.core.calibration import batchnorm_layers, recalibrated_state
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import merged_state
from lwlc.core.spec import MeasureSpec, from_flags
from lwlc.formats import inputs, lock, outputs
from lwlc.formats.io import save_state_dict

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth")
MODULE_CLASS = "lwlc.training.ClassifierModule"
# Lightning's ``load_from_checkpoint`` builds the class (and its nested model) through this.
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


def build_parser() -> Any:
    """The merge argument parser (jsonargparse, like the rest of lwlc's CLI)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    p = short_help(ArgumentParser)(
        prog="lwlc merge",
        description="Average chosen layers of two networks and save the result as a checkpoint.",
        exit_on_error=False,
    )
    p.add_argument(
        "--ckpt",
        type=str | None,
        default=None,
        help="a paired checkpoint: merges its members A and B",
    )
    inputs.add_network_arguments(p, data_help="data for --bn reset (default: from the checkpoint)")
    p.add_argument(
        "--config",
        action=ActionConfigFile,
        help="a YAML file of these options (--print_config writes one)",
    )
    p.add_argument(
        "--groups",
        type=str | list[str],
        default="*",
        help="comma-separated layers or globs (re:<regex>), or a YAML list, to average; "
        "default all",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="weight of B on the averaged layers: (1-alpha)*A + alpha*B",
    )
    p.add_argument(
        "--rest-from", type=str, default="a", help="where the other layers come from: a or b"
    )
    add_spec_arguments(p, ("align", "bn", "bn_samples"))
    p.add_argument(
        "--bn-batch-size",
        "--batch-size",
        type=int,
        default=MeasureSpec.bn_batch_size,
        help="batch size of --bn reset (as lwlc analyze --bn-batch-size: it sets the statistics)",
    )
    p.add_argument(
        "--out",
        type=str,
        required=True,
        help="merged.ckpt, merged.pt or merged.safetensors (never overwritten)",
    )
    return p


def lightning_checkpoint(
    state: Mapping[str, Tensor],
    model_config: Mapping[str, Any],
    data_config: Mapping[str, Any] | None,
    provenance: Mapping[str, Any],
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict, other entries) of a ``ClassifierModule`` checkpoint holding ``state``."""
    import lightning

    meta: dict[str, Any] = {
        "hyper_parameters": {
            "_class_path": MODULE_CLASS,
            "model": dict(model_config),
            "_instantiator": INSTANTIATOR,
        },
        "pytorch-lightning_version": lightning.__version__,
        "lwlc_merge": dict(provenance),
    }
    if data_config:
        meta["datamodule_hyper_parameters"] = {
            "_class_path": data_config["class_path"],
            **data_config.get("init_args", {}),
            "_instantiator": INSTANTIATOR,
        }
    return {f"net.{k}": v for k, v in state.items()}, meta


def _check_args(args: Any) -> None:
    """Every option that needs no file, checked before slow work."""
    inputs.check_sources(args, "merge")
    if not 0.0 <= args.alpha <= 1.0:
        raise LwlcError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.rest_from not in ("a", "b"):  # one side here, where a measurement may take both
        raise LwlcError(f"--rest-from: {args.rest_from!r} is not one of a, b")
    # the options merge shares with a measurement, checked by the same spec
    from_flags(**{k: getattr(args, k) for k in ("align", "bn", "bn_samples", "bn_batch_size")})
    out = Path(args.out)
    if out.suffix not in (*TORCH_SUFFIXES, ".safetensors"):
        raise LwlcError(f"--out {out} must end in {', '.join(TORCH_SUFFIXES)} or .safetensors")
    outputs.check_out(out, is_file=True)
    if out.exists():
        raise LwlcError(
            f"{out} already exists: choose another --out (lwlc never overwrites a checkpoint)"
        )
    lock.acquire(out, "lwlc merge", is_file=True)


def _calibration(args: Any, data_cfg: dict[str, Any] | None, model: nn.Module) -> Tensor:
    """Training inputs for --bn reset, checked to fit ``model``."""
    if data_cfg is None:
        raise LwlcError(
            "--bn reset needs training data and the checkpoint records none: pass --data CLASS"
        )
    datamodule = inputs.build_data(args, data_cfg)
    samples = datamodule.tensors("train", args.bn_samples)[0]
    inputs.check_fits(model, samples[:2], type(datamodule).__name__)
    return samples


def run(argv: Sequence[str]) -> Path:
    """Parse ``argv``, merge, and write the checkpoint; returns its path."""
    try:
        args = build_parser().parse_args(list(argv))
    except Exception as err:  # jsonargparse's ArgumentError and type errors
        raise argument_error(err, "merge") from None
    _check_args(args)
    state_a, state_b, cks, found = inputs.read_members(args, "merge")
    model_cfg = inputs.model_config(args, found)
    layers.check_compatible(state_a, state_b)
    layers.check_finite(state_a, "A")
    layers.check_finite(state_b, "B")
    model = inputs.build_network(args, model_cfg, state_a)
    groups = layers.select(layers.default_groups(model), inputs.csv_list(args.groups))
    state_b = align(args.align, model, state_a, state_b)
    state = merged_state(state_a, state_b, groups, args.alpha, args.rest_from)
    data_cfg = inputs.data_config(args, cks)
    if args.bn == "reset" and batchnorm_layers(model):
        state = recalibrated_state(
            model, state, _calibration(args, data_cfg, model), args.bn_batch_size
        )
    provenance = {
        "sources": [{"path": ck.path, "sha256": ck.sha256} for ck in cks],
        "members": "a and b of one paired checkpoint" if args.ckpt else "ckpt_a and ckpt_b",
        "groups": [g.name for g in groups],
        "alpha": args.alpha,
        "rest_from": args.rest_from,
        "align": args.align,
        "bn": args.bn,
        **(
            {"bn_samples": args.bn_samples, "bn_batch_size": args.bn_batch_size}
            if args.bn == "reset"
            else {}
        ),
    }
    out = Path(args.out)
    if out.suffix == ".safetensors":
        save_state_dict(out, state, {"lwlc_merge": provenance, "model": model_cfg})
    else:
        save_state_dict(out, *lightning_checkpoint(state, model_cfg, data_cfg, provenance))
    print(
        f"merged {len(groups)} layer group(s) at alpha={args.alpha} (rest from "
        f"{args.rest_from.upper()}, align {args.align}, bn {args.bn}) -> {out}",
        file=sys.stderr,
    )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point used by ``lwlc merge`` (the CLI turns LwlcError into one line)."""
    run(sys.argv[1:] if argv is None else argv)
