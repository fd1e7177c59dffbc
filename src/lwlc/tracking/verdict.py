"""The sentence that ends ``make demo``: what the Callback's loss heatmap shows, and where it is.

Read from the Callback's ``barriers.csv`` (its last evaluation, first split, the heatmaps'
reference): the full-model barrier against the single-layer ones.

    python -m lwlc.tracking.verdict runs/demo/barriers
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lwlc.core.errors import LwlcError
from lwlc.formats.io import read_csv

# A single layer counts as "below" the full model's barrier under this share of it.
SHARE = 0.1


def sentence(directory: Path) -> str:
    """One sentence on the full-model and single-layer loss barriers of the last evaluation."""
    csv, summary = directory / "barriers.csv", directory / "summary.json"
    if not csv.is_file() or not summary.is_file():
        raise LwlcError(f"{directory} holds no barriers.csv and summary.json of the Callback")
    options = json.loads(summary.read_text()).get("options", {})
    reference, split = options.get("reference", "midpoint"), options.get("splits", ["test"])[0]
    rows = read_csv(csv)
    last = max(int(r["step"]) for r in rows)
    rows = [r for r in rows if (r["step"], r["split"], r["reference"]) == (last, split, reference)]
    full = next(float(r["loss_barrier"]) for r in rows if r["plan"] == "full")
    single = {f"{r['group']} (rest from {str(r['rest_from']).upper()})": float(r["loss_barrier"])
              for r in rows if r["plan"] == "single"}  # fmt: skip
    epoch = int(rows[0]["epoch"])
    figure = directory / f"heatmap_{split}_single_loss.png"
    where = figure if figure.is_file() else csv
    if full <= 0.1:
        return (
            f"{where} shows no barrier worth the name after {epoch} epochs: averaging the whole "
            f"models costs only {full:.3f} nats of {split} loss ({reference} reference), so this "
            "pair is linearly connected."
        )
    above = sorted(((b, name) for name, b in single.items() if b >= SHARE * full), reverse=True)
    text = (
        f"{where} shows where the barrier lives: averaging the whole models costs {full:.2f} "
        f"nats of {split} loss after {epoch} epochs ({reference} reference), while "
        f"{len(single) - len(above)} of {len(single)} single-layer paths stay below a tenth of that"
    )
    if not above:
        return text + ": the barrier comes from the layers together, not from any one of them."
    named = ", ".join(f"{name} {b:.2f}" for b, name in above)
    return text + f"; the exceptions, where one layer alone carries a barrier: {named}."


def main(argv: list[str] | None = None) -> None:
    """Print the sentence for the Callback directory given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lwlc.tracking.verdict BARRIERS_DIR", file=sys.stderr)
        raise SystemExit(2)
    try:
        print(sentence(Path(args[0])))
    except LwlcError as err:
        print(f"lwlc: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
