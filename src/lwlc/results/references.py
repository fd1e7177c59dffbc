"""Which barrier reference a view shows first: the paper's, against the two whole models.

A barrier is taken against a reference line (``lwlc.core.barriers``). Against the path's own
endpoints (``path``) a single layer's barrier is about 0 by construction (moving one layer gives a
nearly convex curve), so a view showing ``path`` first reads "no single-layer barrier" where the
paper's measure shows one. Every default view (figures, console table, ``lwlc plot``, the API)
therefore shows ``midpoint`` first (the interpolated model at alpha 0.5 against the mean of the
whole models A and B: the paper's heatmap value), ``models`` (the worst alpha against the line
from A to B) when 0.5 is not on the grid, and ``path`` beside. ``models`` is not first because a
single layer's path ends at a hybrid (A with B's layer), whose own loss it counts as barrier.
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_REFERENCE = "midpoint"
ORDER = ("midpoint", "models", "path")  # the order views show references in
# Why a barrier against this reference may be 0 everywhere, said where it is drawn.
FLAT_REASON = {
    "path": "against its own endpoints a layer's path\nis nearly convex: ~0 by construction;\n"
    "reference midpoint compares with A and B",
}


def shown_order(present: Iterable[object]) -> list[str]:
    """The references in ``present`` in the order views show them, the default first."""
    found = {str(r) for r in present}
    return [r for r in ORDER if r in found] + sorted(found - set(ORDER))


def default_reference(present: Iterable[object]) -> str:
    """The reference a view shows when none is asked for: ``midpoint`` if measured, else
    ``models``, else the first one present (``path`` only when nothing else was measured)."""
    order = shown_order(present)
    return order[0] if order else DEFAULT_REFERENCE
