"""The W&B run of ``lwlc fit`` holds one chart of the full model and every single layer over the
steps (``barrier_layers/...``), without a hand-made chart: read back from the offline run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lwlc.commands.cli import main
from lwlc_runs import DIGITS
from wandb_records import finished_records, history


def test_the_wandb_run_charts_the_full_model_against_every_single_layer(tmp_path: Path) -> None:
    main(
        ["fit", "--config", DIGITS, "--trainer.default_root_dir", str(tmp_path)]
        + ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "5"]
        + ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    )
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    rows = history(finished_records(next(run_dir.glob("run-*.wandb"))))
    with (tmp_path / "barriers" / "barriers.csv").open() as f:
        barriers = [r for r in csv.DictReader(f) if r["reference"] == "midpoint"]

    for metric in ("loss", "error"):  # in the CSV's units: nats, fractions of the samples
        key = f"barrier_layers/test/{metric}_table"
        charts = [r for r in rows if r.get(f"{key}/_type") == "table-file"]
        assert charts, f"no {key} in the run"
        table = json.loads((run_dir / "files" / charts[-1][f"{key}/path"]).read_text())
        lines: dict[str, dict[int, float]] = {}
        for values in table["data"]:
            entry = dict(zip(table["columns"], values, strict=True))
            lines.setdefault(entry["lineKey"], {})[int(entry["step"])] = entry["lineVal"]
        expected: dict[str, dict[int, float]] = {}
        for r in barriers:
            rest = "/rest_b" if r["rest_from"] == "b" else ""
            name = "full" if r["plan"] == "full" else f"single/{r['group']}{rest}"
            expected.setdefault(name, {})[int(r["step"])] = float(r[f"{metric}_barrier"])
        layers = {f"single/{g}{rest}" for g in ("fc1", "fc2", "head") for rest in ("", "/rest_b")}
        assert set(lines) == {"full", *layers} == set(expected)
        for name, points in expected.items():
            assert sorted(lines[name]) == sorted(points) == [0, 5, 10]
            assert [lines[name][s] for s in sorted(points)] == pytest.approx(
                [points[s] for s in sorted(points)], rel=1e-6, abs=1e-9
            )
