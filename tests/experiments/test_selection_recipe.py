"""Experiment 9 at smoke scale: the recipe's record equals each merge's own selection report, and
the chosen model it records is the one ``lwlc merge`` wrote (re-evaluated here by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lwlc.commands import experiment


@pytest.mark.slow
def test_selection_recipe_records_what_each_merge_chose(tmp_path: Path) -> None:
    record = experiment.run_experiment("selection", "smoke", tmp_path)
    for align in ("none", "weight-matching"):
        folder = tmp_path / "mlp" / "independent" / "seed0" / "selection" / f"{align}_0.05"
        report = json.loads((folder / "merged.ckpt.selection.json").read_text())
        p = f"mlp/independent/seed0/{align}/0.05/"
        assert record[p + "chosen"] == (", ".join(report["chosen"]) or "(none)")
        assert record[p + "fraction"] == report["fraction"]
        chosen = report["models"]["chosen"]
        assert record[p + "chosen/test/loss"] == chosen["test"]["loss"]
        assert chosen["val"]["loss"] <= report["limit"]  # the budget held where it was chosen
        if align == "none":  # the written model: the chosen groups averaged, the rest from ref
            pair = torch.load(tmp_path / "mlp" / "independent" / "seed0" / "checkpoints" /
                              "last.ckpt", weights_only=True)["state_dict"]  # fmt: skip
            merged = torch.load(folder / "merged.ckpt", weights_only=True)["state_dict"]
            ref = report["rest_from"]
            assert len(merged) == len(pair) // 2
            for key, value in merged.items():
                name = key.removeprefix("net.")
                a, b = pair[f"net_a.{name}"], pair[f"net_b.{name}"]
                want = (
                    (a + b) / 2 if name.split(".")[0] in report["chosen"] else {"a": a, "b": b}[ref]
                )
                torch.testing.assert_close(value, want, rtol=0, atol=1e-6)
        assert (tmp_path / "figures" / f"mlp_independent_seed0_{align}_budget0.05.png").is_file()
