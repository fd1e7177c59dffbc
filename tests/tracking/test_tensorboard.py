"""TensorBoard as the ``lwlc[tensorboard]`` extra: without the package one line naming the extra;
with it, the barrier Callback's scalars and its heatmaps and curves as images, read back from
the event file."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

from lwlc.commands.cli import main
from lwlc_runs import DIGITS

TENSORBOARD = "lightning.pytorch.loggers.TensorBoardLogger"


def fit(root: Path, *args: str) -> None:
    """``lwlc fit`` of the digits config for 2 short epochs, logging to TensorBoard."""
    main(
        ["fit", "--config", DIGITS, "--trainer.default_root_dir", str(root)]
        + ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "5"]
        + ["--trainer.logger", TENSORBOARD, "--trainer.logger.init_args.save_dir", str(root)]
        + ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
        + list(args)
    )


def test_without_tensorboard_the_logger_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for package in ("tensorboard", "tensorboardX"):
        monkeypatch.setitem(sys.modules, package, None)  # `import tensorboard` now fails
    root = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        fit(root)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("lwlc:")]
    assert line.startswith(f"lwlc: error: --trainer.logger {TENSORBOARD} needs the tensorboard")
    assert "pip install 'lwlc[tensorboard]'" in line
    assert "Traceback" not in err
    assert not root.exists()  # nothing set up, nothing written


def png(data: bytes) -> np.ndarray:
    """An encoded image's RGB pixels as uint8."""
    pixels = imread(io.BytesIO(data), format="png")
    return (pixels[..., :3] * 255).round().astype(np.uint8)


def test_tensorboard_gets_the_barrier_scalars_heatmaps_and_curves(tmp_path: Path) -> None:
    fit(tmp_path, "--trainer.callbacks.media_every", "1")
    (events,) = tmp_path.glob("lightning_logs/version_0/events.out.tfevents.*")
    run = EventAccumulator(str(events), size_guidance={IMAGES: 0})
    run.Reload()

    with (tmp_path / "barriers" / "barriers.csv").open() as f:
        written = [r for r in csv.DictReader(f) if r["reference"] == "midpoint"]
    full = {int(r["step"]): float(r["loss_barrier"]) for r in written if r["plan"] == "full"}
    logged = {e.step: e.value for e in run.Scalars("barrier/midpoint/full/loss")}
    assert logged.keys() == full.keys() == {0, 5, 10}
    assert [logged[s] for s in sorted(logged)] == pytest.approx(
        [full[s] for s in sorted(full)], rel=1e-6
    )

    # The heatmaps and the curves are matplotlib images: drawn once, for the last evaluation.
    images = run.Tags()["images"]
    expected = {
        "barrier_heatmap/test_single_loss": [10],
        "barrier_heatmap/test_single_error": [10],
        "barrier_curves/test": [10],
    }
    assert set(expected) <= set(images)
    for tag, steps in expected.items():
        shown = run.Images(tag)
        assert [e.step for e in shown] == steps
        for event in shown:
            pixels = png(event.encoded_image_string)
            assert pixels.shape == (event.height, event.width, 3)
            assert pixels.std() > 10  # a drawing, not a blank image
    # The last heatmap is the PNG the Callback left in barriers/, pixel for pixel.
    for metric in ("loss", "error"):
        heatmap = run.Images(f"barrier_heatmap/test_single_{metric}")[-1]
        on_disk = imread(tmp_path / "barriers" / f"heatmap_test_single_{metric}.png")
        expected_pixels = (on_disk[..., :3] * 255).round().astype(np.uint8)
        assert np.array_equal(png(heatmap.encoded_image_string), expected_pixels)
