"""One folder, one run: ``lwlc fit`` into a folder that holds an earlier run refuses (one line,
nothing touched) unless ``--overwrite``, which removes only that run's files; a resume continues
the run in place (``last.ckpt`` is always the newest); loggers write into the run folder; a fit
that fails at start leaves nothing; the Callback's figures always match its CSVs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml

from lwlc.callbacks import LayerwiseBarrierCallback
from lwlc.commands.cli import main
from lwlc.formats.io import read_csv
from lwlc_runs import DIGITS

CALLBACK = f"{LayerwiseBarrierCallback.__module__}.{LayerwiseBarrierCallback.__name__}"
SHORT = [
    "--trainer.limit_train_batches",
    "5",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


def fit(root: Path, *args: str) -> None:
    """``lwlc fit`` of the demo config, its own loggers included, for short epochs."""
    main(["fit", "--config", DIGITS, "--trainer.default_root_dir", str(root), *SHORT, *args])


def tree(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (W&B's own folder left out) with its sha256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "wandb" not in p.relative_to(folder).parts
    }


def refused(capsys: pytest.CaptureFixture[str], run: callable) -> str:
    """The one line of a refused command (exit code 2, no traceback)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("lwlc: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def callback_config(tmp_path: Path, **init_args: object) -> str:
    """A config replacing the demo's Callback by one with ``init_args``."""
    path = tmp_path / f"callback_{len(list(tmp_path.glob('callback_*')))}.yaml"
    spec = {"max_samples": 200, **init_args.pop("spec", {})}
    callback = {"class_path": CALLBACK, "init_args": {"spec": spec, **init_args}}
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    return str(path)


def test_a_second_fit_is_refused_and_overwrite_removes_only_the_earlier_runs_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # where the configs' old hard-coded runs/<name> would land
    root = tmp_path / "run"
    fit(root, "--trainer.max_epochs", "1")
    # The loggers followed default_root_dir: nothing was written outside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (root / "logs" / "version_0" / "metrics.csv").is_file()
    assert len(list((root / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    first = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    (root / "notes.txt").write_text("mine\n")
    (root / "checkpoints" / "mine.txt").write_text("mine too\n")
    before = tree(root)
    wandb_before = sorted(p.name for p in (root / "wandb").iterdir())

    line = refused(capsys, lambda: fit(root, "--trainer.max_epochs", "1"))
    assert f"{root} holds an earlier run (barriers/, checkpoints/, logs/, wandb/)" in line
    assert f"--ckpt_path {root}/checkpoints/last.ckpt" in line and "--overwrite" in line
    assert tree(root) == before, "a refused fit touches nothing"
    assert sorted(p.name for p in (root / "wandb").iterdir()) == wandb_before

    seeds = ("--model.init_args.init_seed_a", "1", "--model.init_args.init_seed_b", "1")
    fit(root, "--trainer.max_epochs", "1", *seeds, "--overwrite")
    after = tree(root)
    assert after["notes.txt"] == before["notes.txt"]
    assert after["checkpoints/mine.txt"] == before["checkpoints/mine.txt"]
    checkpoints = sorted(p.name for p in (root / "checkpoints").glob("*.ckpt"))
    assert checkpoints == ["best-epoch=0-step=5.ckpt", "last.ckpt"], "no -v1 beside the new run"
    newest = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert newest["global_step"] == 5
    assert not torch.equal(newest["state_dict"]["net_a.fc1.weight"], first["net_a.fc1.weight"])
    assert sorted(p.name for p in (root / "logs").iterdir()) == ["version_0"]
    run_ids = {p.stem for p in (root / "wandb").glob("offline-run-*/run-*.wandb")}
    assert len(run_ids) == 1 and not any(name in wandb_before for name in run_ids)
    assert read_csv(root / "barriers" / "barriers.csv")[0]["epoch"] == 0


def test_a_resume_continues_the_run_in_place_and_refuses_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    quiet = ("--trainer.logger", "false")
    fit(root, "--trainer.max_epochs", "1", *quiet)
    last = root / "checkpoints" / "last.ckpt"
    fit(root, "--trainer.max_epochs", "2", "--ckpt_path", str(last), *quiet)
    assert sorted(p.name for p in (root / "checkpoints").glob("last*")) == ["last.ckpt"]
    assert torch.load(last, weights_only=True)["global_step"] == 10
    epochs = {r["epoch"] for r in read_csv(root / "barriers" / "barriers.csv")}
    assert epochs == {0, 1, 2}
    saved = yaml.safe_load((root / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 2 and saved["ckpt_path"] == str(last)

    before = tree(root)
    again = ("--trainer.max_epochs", "3", "--ckpt_path", str(last), "--overwrite")
    line = refused(capsys, lambda: fit(root, *again))
    assert f"--overwrite would remove the run that --ckpt_path {last} continues" in line
    assert tree(root) == before
    # validate after the fit keeps the fit's config.yaml (it was refused before: 'exists').
    main(["validate", "--config", DIGITS, "--trainer.default_root_dir", str(root), *SHORT,
          "--ckpt_path", str(last), *quiet])  # fmt: skip
    assert tree(root) == before


def test_a_fit_that_fails_at_start_leaves_no_run_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    bad = callback_config(tmp_path, spec={"group": ["nothere.*"]})
    line = refused(capsys, lambda: fit(root, "--config", bad, "--trainer.max_epochs", "1"))
    assert "group pattern 'nothere.*' matches no layer" in line
    # W&B had started its run and the CSV logger its version before the Callback refused.
    assert [p for p in root.rglob("*")] == []
    fit(root, "--trainer.max_epochs", "1")  # the corrected command needs no --overwrite
    assert (root / "checkpoints" / "last.ckpt").is_file()


def test_the_callbacks_figures_are_redrawn_or_removed_with_their_csvs(tmp_path: Path) -> None:
    root = tmp_path / "run"
    last = str(root / "checkpoints" / "last.ckpt")
    quiet = ("--trainer.logger", "false")
    drawn, none = callback_config(tmp_path, figures=True), callback_config(tmp_path, figures=False)
    fit(root, "--config", drawn, "--trainer.max_epochs", "1", *quiet)
    heatmaps = sorted((root / "barriers").glob("heatmap_*.png"))
    names = [f"heatmap_test_single{rest}_{m}.png" for rest in ("", "_rest_b")
             for m in ("error", "loss")]  # fmt: skip
    assert [p.name for p in heatmaps] == names
    first = {p.name: p.read_bytes() for p in heatmaps}
    fit(root, "--config", drawn, "--trainer.max_epochs", "2", "--ckpt_path", last, *quiet)
    second = {p.name: p.read_bytes() for p in (root / "barriers").glob("heatmap_*.png")}
    assert second.keys() == first.keys()
    assert all(second[name] != first[name] for name in first), "drawn again, with epoch 2"
    fit(root, "--config", none, "--trainer.max_epochs", "3", "--ckpt_path", last, *quiet)
    assert list((root / "barriers").glob("*.png")) == [], "no figure of older CSVs is left"
    epochs = {r["epoch"] for r in read_csv(root / "barriers" / "barriers.csv")}
    assert epochs == {0, 1, 2, 3}
