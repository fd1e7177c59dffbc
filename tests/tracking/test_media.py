"""What the barrier Callback shows and draws, and how often: W&B's heatmaps are its own HTML,
holding barriers.csv's values under the PNGs' names; no matplotlib figure is drawn for W&B;
heatmap PNGs are drawn once a fit, from the CSV; a checkpoint does not dump an unchanged
history again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from matplotlib.backends.backend_agg import FigureCanvasAgg

from lwlc import figures
from lwlc.callbacks import LayerwiseBarrierCallback
from lwlc.data import DigitsDataModule
from lwlc.formats.io import read_csv
from lwlc.loggers import WandbLogger
from lwlc.models import MLP
from lwlc.tracking.history import History
from lwlc.training import PairedModule
from wandb_records import finished_records, history

ROW = re.compile(r'<tr><th style="text-align:right">([^<]+)</th>(.*?)</tr>')
HEAD = re.compile(r"<tr><th>[^<]*</th>((?:<th>[^<]*</th>)+)</tr>")


class _Pair(PairedModule):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


pytestmark = pytest.mark.usefixtures("no_wandb_credentials")  # tests/conftest.py


@pytest.fixture
def renders(monkeypatch) -> list[int]:
    """One entry per matplotlib figure drawn (rendered on an Agg canvas) from now on."""
    drawn: list[int] = []
    draw = FigureCanvasAgg.draw

    def counted(canvas, *args, **kwargs):
        drawn.append(1)
        return draw(canvas, *args, **kwargs)

    monkeypatch.setattr(FigureCanvasAgg, "draw", counted)
    return drawn


def _fit(root: Path, epochs: int, **options) -> Path:
    """A W&B run of a digits pair (5 steps an epoch); returns the offline run's folder."""
    callback = LayerwiseBarrierCallback(**options)
    trainer = Trainer(
        default_root_dir=root, max_epochs=epochs, limit_train_batches=5, accelerator="cpu",
        logger=WandbLogger(save_dir=str(root)), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
    )  # fmt: skip
    module = _Pair(MLP(64, 10, 32, 2), init_seed_b=1)
    trainer.fit(module, datamodule=DigitsDataModule(order_seeds=[0, 1]))
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    return run_dir


def _read_heatmap(page: str) -> dict[tuple[str, float], float]:
    """The cells of a W&B heatmap page: (row name, column) -> the value in its tooltip."""
    columns = [float(c) for c in re.findall(r"<th>([^<]*)</th>", HEAD.search(page).group(1))]
    cells = {}
    for name, tds in ROW.findall(page):
        values = re.findall(r'<td[^>]*title="([^"]*)"', tds)
        assert len(values) == len(columns), name
        cells |= {(name, c): float(v) for c, v in zip(columns, values, strict=True)}
    return cells


def test_wandb_heatmaps_hold_the_csvs_values_under_the_pngs_names(tmp_path, renders):
    run_dir = _fit(tmp_path, epochs=2, media_every=1, figures=False)
    rows = history(finished_records(next(run_dir.glob("run-*.wandb"))))
    written = read_csv(tmp_path / "barriers" / "barriers.csv")
    assert {r["epoch"] for r in written} == {0, 1, 2}
    for rest, suffix in (("a", ""), ("b", "_rest_b")):
        for metric in ("loss", "error"):
            key = f"barrier_heatmap/test_single{suffix}_{metric}"
            logged = [r for r in rows if r.get(f"{key}/_type") == "html-file"]
            assert [r["trainer/global_step"] for r in logged] == [0, 5, 10]
            page = (run_dir / "files" / logged[-1][f"{key}/path"]).read_text()
            expected = {
                ("full model" if r["plan"] == "full" else r["group"], float(r["epoch"])): float(
                    r[f"{metric}_barrier"]
                )
                for r in written
                if r["reference"] == "midpoint" and (r["plan"] == "full" or r["rest_from"] == rest)
            }
            assert _read_heatmap(page) == expected, key  # exactly the CSV's numbers
            assert f"{metric} barrier by layer over training, rest from {rest.upper()}" in page
    assert renders == [], "nothing drawn with matplotlib for W&B"
    assert list((tmp_path / "barriers").glob("*.png")) == []


def test_the_heatmap_pngs_are_drawn_once_a_fit_from_the_csv(tmp_path, renders, monkeypatch):
    drawn_from: list[list[dict]] = []
    save = figures.save_heatmaps

    def spy(out_dir, barriers, *args, **kwargs):
        drawn_from.append(list(barriers))
        return save(out_dir, barriers, *args, **kwargs)

    monkeypatch.setattr(figures, "save_heatmaps", spy)
    run_dir = _fit(tmp_path, epochs=3, media_every=1, figures=True)  # 4 evaluations
    pngs = sorted(p.name for p in (tmp_path / "barriers").glob("heatmap_*.png"))
    assert pngs == [f"heatmap_test_single{rest}_{m}.png" for rest in ("", "_rest_b")
                    for m in ("error", "loss")]  # fmt: skip
    assert len(renders) == len(pngs), "each PNG drawn once, at the end of fit"
    (rows,) = drawn_from
    assert rows == read_csv(tmp_path / "barriers" / "barriers.csv")
    # W&B shows its HTML heatmaps after each of the 4 evaluations, never a drawn image.
    logged = history(finished_records(next(run_dir.glob("run-*.wandb"))))
    key = "barrier_heatmap/test_single_loss/_type"
    assert [r["trainer/global_step"] for r in logged if r.get(key) == "html-file"] == [0, 5, 10, 15]
    assert not [k for r in logged for k, v in r.items() if v == "image-file"]


def test_a_checkpoint_encodes_each_row_once_and_its_text_is_json_of_the_rows(monkeypatch):
    from lwlc.tracking import history as history_module

    encoded: list[object] = []
    real_dumps = history_module.json.dumps

    def counting_dumps(obj, **kwargs):
        encoded.append(obj)
        return real_dumps(obj, **kwargs)

    kept = History()
    kept.add(0, 0, [{"alpha": 0.5, "loss": 1.5}], [{"plan": "full", "loss_barrier": 0.1}], [])
    monkeypatch.setattr(history_module.json, "dumps", counting_dumps)
    first = kept.state_dict()
    assert json.loads(first["barriers"]) == kept.barriers
    assert first["barriers"] == real_dumps(kept.barriers), "the text json.dumps would write"
    kept.state_dict()
    kept.add(1, 5, [], [{"plan": "full", "loss_barrier": 0.25}], [])
    changed = kept.state_dict()
    assert len(encoded) == 3, "two barrier rows and one curve row, each encoded once"
    restored = History()
    restored.load_state_dict(changed)
    assert [r["loss_barrier"] for r in restored.barriers] == [0.1, 0.25]
    kept.relabel(5, 2)
    relabelled = kept.state_dict()
    assert json.loads(relabelled["barriers"])[1]["epoch"] == 2
    assert relabelled == {**changed, "barriers": real_dumps(kept.barriers)}


def test_a_heatmap_that_cannot_be_drawn_warns_and_the_fit_ends_complete(
    tmp_path, monkeypatch, capsys
):
    def broken(*args, **kwargs):
        raise RuntimeError("no font for the title\nsecond line")

    monkeypatch.setattr(figures, "save_heatmaps", broken)
    callback = LayerwiseBarrierCallback(figures=True)
    trainer = Trainer(
        default_root_dir=tmp_path, max_epochs=1, limit_train_batches=3, accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[callback],
    )  # fmt: skip
    trainer.fit(_Pair(MLP(64, 10, 32, 2)), datamodule=DigitsDataModule(order_seeds=[0, 1]))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "lwlc: warning" in line]
    (warning,) = warnings
    assert warning.endswith(
        "could not draw the barrier heatmaps (RuntimeError: no font for the title)"
    )
    summary = (tmp_path / "barriers" / "summary.json").read_text()
    assert '"status": "complete"' in summary
    assert {r["epoch"] for r in read_csv(tmp_path / "barriers" / "barriers.csv")} == {0, 1}
