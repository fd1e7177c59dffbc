"""The words of lwlc's figures: labels, titles and how a pair was made, in plain Python.

Kept apart from :mod:`lwlc.results.style` (which imports pandas and seaborn) so that W&B's HTML
heatmaps of the barrier Callback name things exactly as the PNG figures do without paying for
those imports during training.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FULL_LABEL = "full model"
LAYER_AXIS = {
    "single": "layer",
    "cumulative_front": "front layers up to",
    "cumulative_back": "back layers from",
    "custom": "layer set",
}
HEATMAP_ROWS = {  # what a heatmap's rows are, in its title (the axis words read badly there)
    **LAYER_AXIS,
    "cumulative_front": "cumulative group from the front",
    "cumulative_back": "cumulative group from the back",
}
REFERENCES = {
    "path": "vs the path's own endpoints",
    "models": "vs the line from A to B",
    "midpoint": "alpha 0.5 vs the mean of A and B",
}
REST = {"a": "rest from A", "b": "rest from B"}


def pairing_text(summary: Mapping[str, Any]) -> str | None:
    """How the compared networks were made, in a few words, from an lwlc ``summary.json``
    (of ``lwlc analyze`` or of the barrier Callback); None when it records nothing."""
    pairing = summary.get("pairing")
    checkpoints = [c for c in summary.get("checkpoints") or [] if isinstance(c, Mapping)]
    if isinstance(pairing, Mapping) and pairing.get("mode") == "reference":
        return f"the network being trained vs {pairing.get('b')}"
    if not isinstance(pairing, Mapping) and len(checkpoints) == 1:
        pairing = checkpoints[0].get("pairing")  # analyze of a paired checkpoint
    if isinstance(pairing, Mapping) and "init" in pairing:
        return _pair_words(pairing)
    paths = [Path(str(c.get("path"))) for c in checkpoints]
    if len(paths) == 2:
        common = Path(os.path.commonpath(paths)) if paths[0].anchor == paths[1].anchor else None
        if common is not None and common not in paths:
            a, b = (p.relative_to(common) for p in paths)
            return f"A = {a}, B = {b} (in {common})"
        return f"A = {paths[0]}, B = {paths[1]}"
    return pairing if isinstance(pairing, str) else None


def _pair_words(p: Mapping[str, Any]) -> str:
    """``PairedModule.pairing()`` as words: initialisation, then data order."""
    if p.get("init") == "spawn":
        init = f"B spawned from A after {p.get('spawn_steps')} steps"
    elif p.get("init") == "shared":
        init = f"shared initialisation (seed {p.get('init_seed_a')})"
    else:
        init = f"independent initialisations (seeds {p.get('init_seed_a')}, {p.get('init_seed_b')})"
    if p.get("order") == "shared":
        order = f"same data order (seed {p.get('order_seed_a')})"
    else:
        order = f"different data orders (seeds {p.get('order_seed_a')}, {p.get('order_seed_b')})"
    if p.get("data") == "halves":
        order += ", each on its own half of the training data"
    return f"{init}, {order}"


def title(what: str, split: str, reference: str | None, pairing: str | None) -> str:
    """A figure title naming the split, the barrier reference and how the pair was made,
    one line each, never wrapped inside parentheses."""
    lines = [f"{what}, {split} split"]
    if reference is not None:
        lines.append(f"reference: {reference} ({REFERENCES.get(reference, 'as logged')})")
    return unbroken("\n".join(lines + ([f"pair: {pairing}"] if pairing else [])))


def unbroken(text: str) -> str:
    """``text`` with the spaces inside parentheses made non-breaking, so that a wrapped title
    (matplotlib wraps at plain spaces) never splits a parenthesis over two lines."""
    return re.sub(r"\([^()]*\)", lambda m: m.group(0).replace(" ", "\u00a0"), text)


def heatmap_what(metric: str, plan: str, rest_from: str | None) -> str:
    """The first line of a training-time heatmap's title (the PNG's and W&B's)."""
    what = f"{metric} barrier by {HEATMAP_ROWS.get(plan, plan)} over training"
    return what + (f", rest from {str(rest_from).upper()}" if plan != "full" else "")


def barrier_label(metric: str) -> str:
    return "loss barrier (nats)" if metric == "loss" else "error barrier (fraction)"
