"""``lwlc merge``: write the model averaged on chosen layers of two (or k) networks.

``--groups auto`` chooses the layers (``lwlc.core.selection``): the largest set within
``--budget`` nats of the better network's loss, reported beside the output as
``<out>.selection.json/.csv/.png`` (``lwlc.results.selection``). ``--alpha`` may be set per group
or chosen on the selection split; several ``--ckpt`` files are averaged as a soup (``--weights``).
Hugging Face models go to a ``save_pretrained`` folder with a ``mergekit.yml``
(``lwlc.formats.hf_merge``).

The merged model is the engine's model (``lwlc.core.soup.mixed_state``): alpha (one, or per group)
on the chosen groups, the rest from A or B (or the soup of k networks); optionally B is first
permuted to match A (weight matching) and BatchNorm statistics are recomputed on training data.
A ``.ckpt``/``.pt`` output is a ``ClassifierModule`` checkpoint (``net.*`` keys, the model and
data configs, Lightning's version key), so ``lwlc validate/test --ckpt_path`` and plain
``torch.load(weights_only=True)`` read it; a ``.safetensors`` output holds the bare state dict.
"""

from __future__ import annotations

import math
import re
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
from lwlc.core.selection import BUDGET_OF, Selection, member_name, select_groups, tune_alphas
from lwlc.core.soup import Alpha, check_weights, group_alphas, merge_states
from lwlc.core.spec import MeasureSpec, from_flags
from lwlc.formats import inputs, lock, outputs
from lwlc.formats.checkpoints import Checkpoint
from lwlc.formats.hf_merge import is_hf, key_coefficients, member_weights, save_hf
from lwlc.formats.io import save_state_dict
from lwlc.results.selection import check_report_paths, write_report

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth")
MODULE_CLASS = "lwlc.training.ClassifierModule"
# Lightning's ``load_from_checkpoint`` builds the class (and its nested model) through this.
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


def build_parser() -> Any:
    """The merge argument parser (jsonargparse, like the rest of lwlc's CLI)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    p = short_help(ArgumentParser)(
        prog="lwlc merge",
        description="Average chosen layers of two (or k) networks and save the result; "
        "--groups auto chooses the layers within a loss budget.",
        exit_on_error=False,
    )
    p.add_argument(
        "--ckpt",
        type=str | list[str] | None,
        default=None,
        nargs="+",
        help="a paired checkpoint (merges its members A and B), or 2+ single-network files",
    )
    inputs.add_network_arguments(p, data_help="data for --groups auto, --alpha auto and --bn reset "
                                 "(default: from the checkpoint)")  # fmt: skip
    p.add_argument(
        "--config",
        action=ActionConfigFile,
        help="a YAML file of these options (--print_config writes one)",
    )
    p.add_argument(
        "--groups",
        type=str | list[str],
        default="*",
        help="comma-separated layers or globs (re:<regex>), or a YAML list, to average; 'auto': "
        "the largest set within --budget; default all",
    )
    p.add_argument(
        "--alpha",
        type=str | float | list[float] | dict[str, float],
        default=0.5,
        help="weight of B on the averaged layers, (1-alpha)*A + alpha*B: a number, a list over "
        "the chosen groups in forward order, 'group: alpha' pairs, or 'auto' (a grid per group)",
    )
    add_selection_arguments(p)
    add_spec_arguments(p, ("align", "bn", "bn_samples", "max_samples"))
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
        help="merged.ckpt, merged.pt or merged.safetensors, or a folder for Hugging Face models "
        "(save_pretrained + mergekit.yml); never overwritten",
    )
    return p


def add_selection_arguments(p: Any) -> None:
    """--weights, --rest-from, --budget, --budget-of, --select-split, --exhaustive-max, --device."""
    p.add_argument(
        "--weights",
        type=str | list[float] | None,
        default=None,
        help="k networks: one weight per network, summing to 1 (default uniform)",
    )
    p.add_argument(
        "--rest-from",
        type=str | None,
        default=None,
        help="where the other layers come from: a, b, c, ... or 'better' (default: a; with "
        "--groups auto the network with the lowest selection loss)",
    )
    for flag, kind, default, text in (
        ("--budget", float, 0.05, "--groups auto: nats of loss allowed above --budget-of's"),
        ("--budget-of", str, "better", "the loss the budget counts from: a, b or better"),
        ("--select-split", str, "val", "the split layers and --alpha auto are chosen on"),
        ("--exhaustive-max", int, 12, "search all subsets up to this many groups, then greedy"),
    ):
        p.add_argument(flag, type=kind, default=default, help=text)
    p.add_argument("--device", type=str, default="cpu", help="where to evaluate: cpu, cuda, ...")


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


def alpha_value(value: object) -> Alpha | str:
    """--alpha as given: a number, 'auto', a list, a mapping, or text of one of these
    ('0.3,0.5' or 'fc1: 0.3, head: 0.5')."""
    if not isinstance(value, str):
        return value  # type: ignore[return-value]
    text = value.strip()
    if text == "auto":
        return text
    try:
        if ":" in text and not text.startswith("{"):
            pairs = (item.split(":", 1) for item in text.split(",") if item.strip())
            return {name.strip(): float(a) for name, a in pairs}
        if text.startswith(("[", "{")):
            import yaml

            return yaml.safe_load(text)
        numbers = [float(t) for t in text.split(",")]
        bad = next(
            (
                t.strip()
                for t, n in zip(text.split(","), numbers, strict=True)
                if not math.isfinite(n)
            ),
            None,
        )
        if bad is not None:
            raise LwlcError(f"--alpha: expected a number, got '{bad}' (NaN and infinity are not)")
    except (ValueError, TypeError):
        raise LwlcError(
            f"--alpha {value!r} is not a number, a list, 'group: alpha' pairs or auto"
        ) from None
    return numbers[0] if len(numbers) == 1 else numbers


def _check_args(args: Any) -> None:
    """Every option that needs no file, checked before slow work."""
    ckpts = list(args.ckpt or [])
    if ckpts and (args.ckpt_a or args.ckpt_b):
        raise LwlcError("give either --ckpt FILE(S) or --ckpt-a A --ckpt-b B, not both")
    if not ckpts and not (args.ckpt_a and args.ckpt_b):
        raise LwlcError(
            "nothing to merge: give --ckpt PAIR.ckpt, --ckpt M1 M2 ..., or --ckpt-a A --ckpt-b B"
        )
    args.alpha = alpha_value(args.alpha)
    args.weights = inputs.weights_value(args.weights)
    if isinstance(args.alpha, float | int) and not 0.0 <= args.alpha <= 1.0:
        raise LwlcError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if not (math.isfinite(args.budget) and args.budget >= 0):
        raise LwlcError(f"--budget must be a number >= 0 (nats of loss), got {args.budget}")
    if args.budget_of not in BUDGET_OF:
        raise LwlcError(
            f"--budget-of must be one of {', '.join(BUDGET_OF)}, got {args.budget_of!r}"
        )
    if args.rest_from is not None and not re.fullmatch(r"[a-z]|better", args.rest_from):
        raise LwlcError(f"--rest-from: {args.rest_from!r} is not one of a, b, ... or better")
    if args.alpha == "auto" and (len(ckpts) > 2 or args.weights is not None):
        raise LwlcError("--alpha auto applies to two networks: k networks take --weights")
    if args.groups == "auto" and not isinstance(args.alpha, float | int | str):
        raise LwlcError("--groups auto takes one --alpha (a number or auto): the groups are not "
                        "known before the search")  # fmt: skip
    from_flags(**{k: getattr(args, k) for k in ("align", "bn", "bn_samples", "bn_batch_size",
                                                "max_samples")})  # fmt: skip
    out = Path(args.out)
    if out.suffix not in (*TORCH_SUFFIXES, ".safetensors", ""):
        raise LwlcError(f"--out {out} must end in {', '.join(TORCH_SUFFIXES)} or .safetensors "
                        "(or be a folder, for Hugging Face models)")  # fmt: skip
    outputs.check_out(out, is_file=True)
    if out.exists():
        raise LwlcError(
            f"{out} already exists: choose another --out (lwlc never overwrites a checkpoint)"
        )
    check_report_paths(out)
    lock.acquire(out, "lwlc merge", is_file=True)


def _rest_index(args: Any, k: int, auto: bool) -> int | None:
    """--rest-from as a member index; None: the better network (--groups auto's default)."""
    if args.rest_from == "better" or (args.rest_from is None and auto):
        return None
    i = ord(args.rest_from or "a") - ord("a")
    if i >= k:
        names = ", ".join(member_name(j) for j in range(k))
        raise LwlcError(f"--rest-from: {args.rest_from!r} is not one of {names} or better")
    return i


def _calibration(args: Any, data_cfg: dict[str, Any] | None, model: nn.Module) -> Tensor:
    """Training inputs for --bn reset, checked to fit ``model``."""
    datamodule = _datamodule(args, data_cfg, "--bn reset needs training data")
    samples = datamodule.tensors("train", args.bn_samples)[0]
    inputs.check_fits(model, samples[:2], type(datamodule).__name__)
    return samples


def _datamodule(args: Any, data_cfg: dict[str, Any] | None, why: str) -> Any:
    if data_cfg is None:
        raise LwlcError(f"{why} and the checkpoint records no data: pass --data CLASS")
    return inputs.build_data(args, data_cfg)


def _select(args: Any, model: nn.Module, states: list, groups: list, data_cfg: Any,
            samples: Tensor | None) -> Selection:  # fmt: skip
    """The selection (or, with named groups and --alpha auto, their measurement)."""
    data = _datamodule(args, data_cfg, "--groups auto and --alpha auto measure on data")
    splits = {
        s: data.tensors(s, args.max_samples) for s in dict.fromkeys((args.select_split, "test"))
    }
    inputs.check_fits(model, splits[args.select_split][0][:2], type(data).__name__)
    auto = args.groups == "auto"
    chosen = None if auto else layers.select(groups, inputs.csv_list(args.groups))
    sel = select_groups(
        model, states, groups, splits, args.budget, select_split=args.select_split,
        budget_of=args.budget_of, rest_from=_rest_index(args, len(states), auto),
        alpha=args.alpha if isinstance(args.alpha, float | int) else 0.5, weights=args.weights,
        exhaustive_max=args.exhaustive_max, bn=args.bn, calibration=samples,
        bn_batch_size=args.bn_batch_size, device=args.device,
        fixed=None if chosen is None else [groups.index(g) for g in chosen],
    )  # fmt: skip
    if args.alpha == "auto":
        tune_alphas(sel)
    elif not auto:
        sel.alphas = group_alphas(args.alpha, groups, sel.result.chosen)
    return sel


def _named_state(args: Any, states: list, groups: list) -> tuple[dict, dict]:
    """The merged state of named groups (no data needed) and its per-group alphas."""
    chosen = [groups.index(g) for g in layers.select(groups, inputs.csv_list(args.groups))]
    rest = _rest_index(args, len(states), False) or 0
    state, alphas = merge_states(states, groups, chosen, args.alpha, args.weights, rest)
    return state, {groups[i].name: a for i, a in alphas.items()}


def run(argv: Sequence[str]) -> Path:
    """Parse ``argv``, merge (choosing the groups with --groups auto), and write the checkpoint
    (and, when measured, its selection report); returns its path."""
    try:
        args = build_parser().parse_args(list(argv))
    except Exception as err:  # jsonargparse's ArgumentError and type errors
        raise argument_error(err, "merge") from None
    _check_args(args)
    states, cks, found = inputs.read_networks(args, "merge")
    model_cfg = inputs.model_config(args, found)
    for i, state in enumerate(states):
        layers.check_compatible(states[0], state)
        layers.check_finite(state, member_name(i).upper())
    model = inputs.build_network(args, model_cfg, states[0])
    groups = layers.default_groups(model)
    states = [states[0]] + [align(args.align, model, states[0], s) for s in states[1:]]
    data_cfg = inputs.data_config(args, cks)
    reset = args.bn == "reset" and batchnorm_layers(model)
    samples = _calibration(args, data_cfg, model) if reset else None
    sel = None
    if args.groups == "auto" or args.alpha == "auto":
        sel = _select(args, model, states, groups, data_cfg, samples)
        state, alphas = (
            sel.state(),
            {g.name: sel.alphas[i] for i, g in enumerate(groups) if i in sel.alphas},
        )
        rest = member_name(sel.rest)
    else:
        state, alphas = _named_state(args, states, groups)
        rest = member_name(_rest_index(args, len(states), False) or 0)
    args.rest_from_resolved = rest
    if samples is not None:
        state = recalibrated_state(model, state, samples, args.bn_batch_size)
    provenance = _provenance(args, cks, states, alphas, rest, sel)
    out = Path(args.out)
    if is_hf(model_cfg):
        _save_hf(args, out, model, state, cks, alphas, groups, len(states))
    elif not out.suffix:
        raise LwlcError(f"--out {out}: a folder is for Hugging Face models; name a .ckpt, .pt "
                        "or .safetensors file")  # fmt: skip
    elif out.suffix == ".safetensors":
        save_state_dict(out, state, {"lwlc_merge": provenance, "model": model_cfg})
    else:
        save_state_dict(out, *lightning_checkpoint(state, model_cfg, data_cfg, provenance))
    if sel is not None:
        write_report(out, sel, {"merge": provenance})
    print(_summary_line(alphas, provenance, out, sel), file=sys.stderr)
    return out


def _save_hf(args: Any, out: Path, model: nn.Module, state: dict, cks: list[Checkpoint],
             alphas: dict, groups: list, k: int) -> None:  # fmt: skip
    """``save_pretrained`` of the merged model and the same merge as ``mergekit.yml``."""
    if out.suffix:
        raise LwlcError(
            f"--out {out}: a Hugging Face merge is written to a folder; drop the suffix"
        )
    rest = ord(args.rest_from_resolved) - ord("a")
    two = k == 2 and args.weights is None
    end = [0.0, 1.0] if two else check_weights(args.weights, k)
    coefficient = key_coefficients(state, groups, alphas, float(rest) if two else 0.0)
    weights = member_weights(state, coefficient, 0 if two else rest, end)
    save_hf(out, model, state, [ck.path for ck in cks], weights)


def _provenance(args: Any, cks: list[Checkpoint], states: list, alphas: dict, rest: str,
                sel: Selection | None) -> dict[str, Any]:  # fmt: skip
    """What the merged checkpoint records about how it was made."""
    single = len(cks) == 1
    return {
        "sources": [{"path": ck.path, "sha256": ck.sha256} for ck in cks],
        "members": "a and b of one paired checkpoint" if single else f"{len(states)} files",
        "groups": list(alphas),
        "alpha": next(iter(set(alphas.values()))) if len(set(alphas.values())) == 1 else alphas,
        "alphas": alphas,
        "weights": None if sel is None and len(states) == 2 and args.weights is None
        else (sel.weights if sel is not None else check_weights(args.weights, len(states))),
        "rest_from": rest,
        "align": args.align,
        "bn": args.bn,
        **({"search": sel.result.search, "budget": args.budget, "select_split": args.select_split}
           if sel is not None else {}),
        **(
            {"bn_samples": args.bn_samples, "bn_batch_size": args.bn_batch_size}
            if args.bn == "reset"
            else {}
        ),
    }  # fmt: skip


def _summary_line(alphas: dict, prov: dict, out: Path, sel: Selection | None) -> str:
    """The one line a merge prints: what was chosen (and how), and where it went."""
    how = "" if sel is None else (
        f"{sel.result.search} search chose {len(alphas)} of {len(sel.groups)} group(s) "
        f"({sel.fraction(sel.result.chosen):.1%} of parameters) within {sel.budget} nats; "
    )  # fmt: skip
    a = prov["alpha"]
    at = "" if not alphas else f" at alpha={'per group' if isinstance(a, dict) else a}"
    return (
        f"{how}merged {len(alphas)} layer group(s){at} (rest from {prov['rest_from'].upper()}, "
        f"align {prov['align']}, bn {prov['bn']}) -> {out}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point used by ``lwlc merge`` (the CLI turns LwlcError into one line)."""
    run(sys.argv[1:] if argv is None else argv)
