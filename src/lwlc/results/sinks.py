"""Publishing to loggers: every W&B run and TensorBoard writer of a trainer gets the Callback's
figures and charts.

Nothing here propagates an error: media are a view, and training goes on (one warning) when
drawing them or a logger fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lwlc.loggers import WandbLogger, has_wandb, wandb_run
from lwlc.notices import first_line, warn


def log_to_wandb(loggers: list[Logger], build: Callable[[], dict[str, Any]], step: int) -> None:
    """Log ``build()`` (tables, plots, images) to every W&B run, building it only if there is one.

    Nothing here propagates: a failing drawing warns, a failing W&B call turns lwlc's logger off
    (one warning); media are a view and training goes on.
    """
    targets = [(lg, run) for lg in loggers if (run := wandb_run(lg)) is not None]
    if not targets:
        return
    try:
        payload = build()
    except Exception as err:  # a figure that cannot be drawn must not stop training
        warn(f"could not draw the barrier plots for W&B ({first_line(err)}); training continues")
        return
    for logger, run in targets:
        try:
            run.log({**payload, "trainer/global_step": step})
        except Exception as err:  # W&B failing must not stop training
            if isinstance(logger, WandbLogger):
                logger.turn_off("logging barrier plots", err)
            else:
                warn(f"could not log barrier plots to W&B ({first_line(err)}); training continues")


def has_media(loggers: list[Logger]) -> bool:
    """Whether any of ``loggers`` shows figures: W&B or TensorBoard."""
    return has_wandb(loggers) or has_tensorboard(loggers)


def has_tensorboard(loggers: list[Logger]) -> bool:
    """Whether any of ``loggers`` is TensorBoard's (it shows the heatmaps as images)."""
    return any(isinstance(lg, TensorBoardLogger) for lg in loggers)


def figure_pixels(figure: Any) -> Any:
    """An RGB uint8 array (height x width x 3) of a matplotlib Figure or of a PNG file."""
    import numpy as np

    if isinstance(figure, (str, os.PathLike)):
        from matplotlib.image import imread

        pixels = imread(os.fspath(figure))
        if pixels.dtype != np.uint8:
            pixels = (pixels * 255).round().astype(np.uint8)
        return pixels[..., :3]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def log_to_tensorboard(
    loggers: list[Logger], build: Callable[[], Mapping[str, Any]], step: int
) -> None:
    """Add ``build()`` (tag -> matplotlib Figure or PNG path) as images to every TensorBoard
    logger (rank 0), building them only if there is one. Nothing here propagates: figures are a
    view, and training goes on (one warning) when drawing or writing them fails."""
    if rank_zero_only.rank != 0:
        return
    writers = [lg.experiment for lg in loggers if isinstance(lg, TensorBoardLogger)]
    if not writers:
        return
    try:
        images = {tag: figure_pixels(figure) for tag, figure in build().items()}
    except Exception as err:  # a figure that cannot be drawn must not stop training
        warn(f"could not draw the barrier plots for TensorBoard ({first_line(err)})")
        return
    for writer in writers:
        try:
            for tag, pixels in images.items():
                writer.add_image(tag, pixels, global_step=step, dataformats="HWC")
            writer.flush()
        except Exception as err:  # TensorBoard failing must not stop training
            warn(f"could not log barrier plots to TensorBoard ({first_line(err)})")
