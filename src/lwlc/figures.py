"""Every lwlc figure, by the names callers have always used: the drawing lives in
:mod:`lwlc.results` (``style``, ``bars``, ``heatmaps``, ``draw``); this module only gathers it.

Each function takes tidy rows (dicts as written by ``lwlc.core.sweep``, or a DataFrame of them, one
row per observation) and returns a matplotlib Figure; the ``save_*`` functions write PNGs.
"""

from lwlc.core.barriers import METRICS
from lwlc.results.bars import interpolation_curves, layer_barriers, layer_distances
from lwlc.results.draw import (
    draw_figures,
    heatmap_name,
    pairwise_figures,
    save_analysis_figures,
    save_distances,
    save_heatmaps,
    save_training_figures,
)
from lwlc.results.heatmaps import barrier_heatmap, barrier_matrices, cell_edges, heatmap_table
from lwlc.results.style import (
    DPI,
    FULL_LABEL,
    LAYER_AXIS,
    REFERENCES,
    SAME_MODEL,
    frame,
    legend_from,
    legend_outside,
    legend_width,
    look,
    pairing_text,
    panel_grid,
    save_figure,
)

__all__ = [
    "DPI",
    "FULL_LABEL",
    "LAYER_AXIS",
    "METRICS",
    "REFERENCES",
    "SAME_MODEL",
    "barrier_heatmap",
    "barrier_matrices",
    "cell_edges",
    "draw_figures",
    "frame",
    "heatmap_name",
    "heatmap_table",
    "interpolation_curves",
    "layer_barriers",
    "layer_distances",
    "legend_from",
    "legend_outside",
    "legend_width",
    "look",
    "pairing_text",
    "pairwise_figures",
    "panel_grid",
    "save_analysis_figures",
    "save_distances",
    "save_figure",
    "save_heatmaps",
    "save_training_figures",
]
