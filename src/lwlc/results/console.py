"""The tables a measurement prints: barriers per path against every reference, the default first,
and the whole model's other measures. Numbers that round to zero print as 0, never ``-0.0000``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lwlc.core.sweep import Rows, path_key
from lwlc.results.references import shown_order

LEGEND = {
    "midpoint": "midpoint: at alpha 0.5 vs the mean of A and B (the paper's heatmap value; "
    "the default of every figure)",
    "models": "models: the worst alpha vs the line between A and B (a single layer's path ends "
    "at a hybrid of A and B, whose own loss counts here)",
    "path": "path: vs the line between the path's own endpoints (~0 for single layers)",
}


def shown(value: object, digits: int) -> str:
    """``value`` to ``digits`` decimals, what rounds to zero shown as 0 (never ``-0.0000``)."""
    x = float(value)  # type: ignore[arg-type]
    return f"{0.0 if abs(x) < 0.5 * 10**-digits else x:.{digits}f}"


def print_table(barriers: Rows, split: str) -> None:
    """A readable table of every path's loss barrier against each reference side by side (nats),
    the default reference first, and its error barrier against the default reference
    (a fraction of the samples, as in barriers.csv and W&B), with a legend."""
    by_ref: dict[str, dict[tuple[str, str, str], dict[str, Any]]] = {}
    for r in barriers:
        if r["split"] == split:
            by_ref.setdefault(str(r["reference"]), {})[path_key(r)] = r
    refs = shown_order(by_ref)
    if not refs:
        return
    first = by_ref[refs[0]]
    width = max(len(str(r["group"])) for r in first.values())
    print(f"\nBarriers on {split}: loss in nats against each reference, error as a fraction")
    for ref in refs:
        print(f"  {LEGEND.get(ref, ref)}")
    header = "".join(f"{'loss ' + ref:>15}" for ref in refs)
    error_name = f"error {refs[0]}"
    print(f"{'plan':<17} {'group':<{width}} {'rest':<4}{header} {error_name:>15}")
    for key, r in first.items():
        losses = "".join(
            f"{shown(by_ref[ref].get(key, {}).get('loss_barrier', float('nan')), 4):>15}"
            for ref in refs
        )
        error = shown(float(r["error_barrier"]), 4)
        print(f"{r['plan']:<17} {r['group']:<{width}} {r['rest_from']:<4}{losses} {error:>15}")


def print_measures(rows: Rows) -> None:
    """The whole model's weight measures, and agreement and robustness per split, one line
    each (measures.csv has every layer)."""
    print("\nOther measures (every layer in measures.csv):")
    for r in rows:
        if r["group"] != "all":
            continue
        where = f" on {r['split']}" if r["split"] else ""
        at = f" at alpha {float(r['alpha']):g}" if r["alpha"] not in ("", None) else ""
        print(f"  {r['measure']} {r['between']}{where}{at}: {float(r['value']):.4f}")


def print_report(
    summary: Mapping[str, Any], splits: Sequence[str], barriers: Rows, measures: Rows
) -> None:
    """The console report of a finished analysis: the pair, its stages, one table per split."""
    print(f"\npair: {summary['pairing']}")
    print(f"stages: {summary['stages']['count']} ({summary['stages']['how']})")
    for split in splits:
        print_table(barriers, split)
    if measures:
        print_measures(measures)
