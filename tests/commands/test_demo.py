"""`make demo`: a pair whose figure shows a barrier and where it lives, and the sentence that
says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CONFIGS
from lwlc.formats.io import read_csv, write_csv
from lwlc.tracking.verdict import main, sentence

COLUMNS = ["epoch", "step", "plan", "group", "rest_from", "split", "reference", "loss_barrier"]


def _barriers(folder: Path, full: float, singles: list[float]) -> None:
    """A Callback folder whose last evaluation (step 50) has these midpoint loss barriers; an
    earlier evaluation and another reference around them must not count."""
    rows = [dict(epoch=1, step=10, plan="full", group="all", rest_from="a", split="test",
                 reference="midpoint", loss_barrier=9.0)]  # fmt: skip
    for reference, scale in (("midpoint", 1.0), ("path", 0.0)):
        rows.append(dict(epoch=5, step=50, plan="full", group="all", rest_from="a",
                         split="test", reference=reference, loss_barrier=scale * full))  # fmt: skip
        rows += [
            dict(
                epoch=5,
                step=50,
                plan="single",
                group=f"fc{i // 2}",
                rest_from="ab"[i % 2],
                split="test",
                reference=reference,
                loss_barrier=scale * b,
            )  # fmt: skip
            for i, b in enumerate(singles)
        ]
    folder.mkdir(parents=True)
    write_csv(folder / "barriers.csv", rows, COLUMNS)
    options = {"reference": "midpoint", "splits": ["test"]}
    (folder / "summary.json").write_text(json.dumps({"options": options}))


def test_the_sentence_counts_single_layers_below_a_tenth_of_the_full_barrier(tmp_path):
    folder = tmp_path / "barriers"
    _barriers(folder, 1.2, [0.01] * 6 + [0.2, 0.5])
    (folder / "heatmap_test_single_loss.png").write_bytes(b"png")
    text = sentence(folder)
    assert text.startswith(f"{folder / 'heatmap_test_single_loss.png'} shows where")
    assert "costs 1.20 nats of test loss after 5 epochs" in text
    assert "6 of 8 single-layer paths stay below a tenth of that; the exceptions" in text
    assert text.endswith("alone carries a barrier: fc3 (rest from B) 0.50, fc3 (rest from A) 0.20.")


def test_a_pair_without_a_barrier_is_said_to_be_connected(tmp_path, capsys):
    folder = tmp_path / "barriers"
    _barriers(folder, 0.004, [0.001] * 4)
    main([str(folder)])
    out = capsys.readouterr().out
    assert f"{folder / 'barriers.csv'} shows no barrier worth the name" in out
    assert "only 0.004 nats" in out and "linearly connected" in out


def test_a_folder_without_barriers_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"lwlc: error: {tmp_path} holds no barriers.csv and summary.json of the Callback"


@pytest.mark.slow
def test_the_demo_pair_has_a_full_barrier_and_single_layers_mostly_below_it(tmp_path):
    """`make demo`'s fit as a user runs it (without loggers): at the end, a full-model barrier
    of more than half a nat, and most of the 14 single-layer paths under a tenth of it."""
    from lwlc.commands.cli import main as lwlc

    root = tmp_path / "demo"
    lwlc(["fit", "--config", str(CONFIGS / "demo.yaml"), "--trainer.default_root_dir", str(root),
          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])  # fmt: skip
    rows = read_csv(root / "barriers" / "barriers.csv")
    last = [r for r in rows if r["step"] == rows[-1]["step"] and r["reference"] == "midpoint"]
    full = next(r["loss_barrier"] for r in last if r["plan"] == "full")
    singles = [r["loss_barrier"] for r in last if r["plan"] == "single"]
    assert full > 0.5 and len(singles) == 14
    assert sum(b < 0.1 * full for b in singles) >= 10
