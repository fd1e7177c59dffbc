"""A merged Hugging Face model as a ``save_pretrained`` folder with a ``mergekit.yml`` beside it.

The YAML expresses the same linear merge per tensor in mergekit's terms (``merge_method:
linear``, each model's ``parameters: weight`` as a list of ``filter``/``value`` conditions, first
match wins, ``normalize: false``), so a selection made by lwlc on small models can be replayed by
mergekit. mergekit's filters match by substring, so every tensor whose name contains a listed
name gets its own, longer condition first; the last condition (no filter) gives the rest.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from lwlc.core.errors import LwlcError

HF_CLASS = "lwlc.formats.hf.CausalLM"
PREFIX = "lm."  # CausalLM keeps the transformers model as ``self.lm``
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "tokenizer.model")  # fmt: skip


def is_hf(model_config: Mapping[str, object]) -> bool:
    """Whether the networks are local Hugging Face models (lwlc's CausalLM)."""
    return model_config.get("class_path") == HF_CLASS


def member_weights(
    state: Mapping[str, Tensor], coefficient: Mapping[str, float], start: int, end: Sequence[float]
) -> dict[str, list[float]]:
    """Per tensor (HF name), each member's weight: ``(1 - c)`` on the start member plus ``c``
    times the end's weights (two networks: end is B, ``[0, 1]``; k: the soup's weights)."""
    out = {}
    for key in state:
        if not state[key].is_floating_point():
            continue
        c = coefficient[key]
        out[key.removeprefix(PREFIX)] = [
            (1.0 - c) * (i == start) + c * w for i, w in enumerate(end)
        ]
    return out


def mergekit_config(sources: Sequence[str], weights: Mapping[str, list[float]]) -> dict:
    """mergekit's linear merge giving every tensor its members' weights."""
    counts: dict[tuple[float, ...], int] = {}
    for w in weights.values():
        counts[tuple(w)] = counts.get(tuple(w), 0) + 1
    common = max(counts, key=counts.__getitem__)  # the most frequent weights: the last condition
    special = {n for n, w in weights.items() if tuple(w) != common}
    special |= {n for n in weights for s in special if s in n and n != s}
    names = sorted(special, key=lambda n: (-len(n), n))
    models = []
    for i, source in enumerate(sources):
        conditions = [{"filter": n, "value": weights[n][i]} for n in names]
        models.append({"model": str(Path(source).resolve()),
                       "parameters": {"weight": [*conditions, {"value": common[i]}]}})  # fmt: skip
    return {"merge_method": "linear", "dtype": "float32", "parameters": {"normalize": False},
            "models": models}  # fmt: skip


def save_hf(
    out: Path,
    model: nn.Module,
    state: Mapping[str, Tensor],
    sources: Sequence[str],
    weights: Mapping[str, list[float]],
) -> None:
    """Write ``save_pretrained`` of the merged model plus ``mergekit.yml`` to the new folder
    ``out`` (built beside it and renamed into place: never half a folder, never overwriting)."""
    import yaml

    if out.exists():
        raise LwlcError(f"{out} already exists: choose another --out (lwlc never overwrites)")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        net = model.cpu()
        net.load_state_dict(dict(state))
        net.lm.save_pretrained(tmp)  # type: ignore[operator]
        for name in TOKENIZER_FILES:
            found = Path(sources[0]) / name
            if found.is_file():
                shutil.copy2(found, tmp / name)
        (tmp / "mergekit.yml").write_text(yaml.safe_dump(mergekit_config(sources, weights)))
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def key_coefficients(
    state: Mapping[str, Tensor], groups: Sequence[object], alphas: Mapping[str, float], rest: float
) -> dict[str, float]:
    """Each key's coefficient from the chosen groups' alphas (by name), ``rest`` elsewhere."""
    chosen = {k: alphas[g.name] for g in groups if g.name in alphas for k in g.keys}  # type: ignore[attr-defined]
    return {
        k: chosen.get(k, rest) if torch.is_floating_point(v) else rest for k, v in state.items()
    }
