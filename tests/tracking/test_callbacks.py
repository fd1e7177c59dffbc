"""The layer-wise barrier Callback: schedule, values, history across resumes, DDP."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback
from PIL import Image

import lwlc.tracking.measure as measure_module
from engine_reference import naive_curve
from lwlc.callbacks import DEFAULT_SPEC, LayerwiseBarrierCallback
from lwlc.commands import analyze, cli
from lwlc.core.engine import Evaluator
from lwlc.core.errors import LwlcError
from lwlc.core.interpolation import default_alphas, make_paths
from lwlc.core.layers import default_groups
from lwlc.core.spec import MeasureSpec
from lwlc.core.sweep import sweep
from lwlc.data import DigitsDataModule
from lwlc.formats.checkpoints import read_checkpoint
from lwlc.formats.io import append_csv, read_csv, write_csv
from lwlc.models import MLP
from lwlc.training import ClassifierModule, PairedModule, reinitialize
from lwlc_runs import QUIET

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "digits_mlp.yaml"
KEY = ("plan", "group", "rest_from", "split", "reference")
CALLBACK = "lwlc.callbacks.LayerwiseBarrierCallback"


class _Pair(PairedModule):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class _Single(ClassifierModule):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _mlp() -> MLP:
    return MLP(in_features=64, num_classes=10, width=32, depth=2)


def _data(order_seeds: tuple[int, ...] = (0, 1)) -> DigitsDataModule:
    return DigitsDataModule(batch_size=32, order_seeds=order_seeds)


def _trainer(root: Path, callbacks: list, max_epochs: int = 2, **kwargs) -> Trainer:
    return Trainer(
        default_root_dir=root,
        max_epochs=max_epochs,
        limit_train_batches=5,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **kwargs,
    )


SPEC_FIELDS = set(MeasureSpec.__dataclass_fields__)


def _options(options: dict) -> dict:
    """The Callback's init_args of ``options``: MeasureSpec's fields go under ``spec``."""
    spec = {k: v for k, v in options.items() if k in SPEC_FIELDS}
    rest = {k: v for k, v in options.items() if k not in SPEC_FIELDS}
    return {**rest, "spec": {"max_samples": 1000, **spec}} if spec else rest


def _callback(**options) -> LayerwiseBarrierCallback:
    """A Callback with ``options``, MeasureSpec's among them going to its spec."""
    spec = options.pop("spec", None) or {k: options.pop(k) for k in SPEC_FIELDS & set(options)}
    return LayerwiseBarrierCallback(MeasureSpec(**{"max_samples": 1000, **spec}), **options)


def _cli_fit(root: Path, callback: dict, *args: str) -> None:
    """``lwlc fit`` of the digits config (5 batches an epoch) with the Callback configured so."""
    callback = _options(callback)
    extra = root.with_suffix(".callback.yaml")
    extra.write_text(
        yaml.safe_dump(
            {"trainer": {"callbacks": [{"class_path": CALLBACK, "init_args": callback}]}}
        )
    )
    cli.main(
        [
            "fit",
            "--config",
            str(CONFIG),
            "--config",
            str(extra),
            "--trainer.default_root_dir",
            str(root),
            *QUIET,
            "--trainer.limit_train_batches",
            "5",
            *args,
        ]
    )


def _by_key(rows: list[dict]) -> dict[tuple, dict]:
    keyed = {tuple(r[k] for k in KEY): r for r in rows}
    assert len(keyed) == len(rows), "each (path, split, reference) appears once"
    return keyed


def _last_step(rows: list[dict]) -> list[dict]:
    last = max(r["step"] for r in rows)
    return [r for r in rows if r["step"] == last]


def test_callback_values_equal_lwlc_analyze_on_the_same_checkpoint(tmp_path):
    run = tmp_path / "run"
    options = {
        "plans": ["full", "single", "cumulative_front"],
        "rest_from": ["a", "b"],
        "splits": ["val", "test"],
        "max_samples": None,
        "figures": False,
    }
    _cli_fit(run, options, "--trainer.max_epochs", "2")
    out = tmp_path / "analysis"
    options = "--plans full,single,cumulative_front --splits val,test --no-plots".split()
    analyze.run(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(out), *options])
    ours = _by_key(_last_step(read_csv(run / "barriers" / "barriers.csv")))
    theirs = _by_key(read_csv(out / "barriers.csv"))
    assert ours.keys() == theirs.keys()
    for key, row in theirs.items():
        assert ours[key]["loss_barrier"] == pytest.approx(row["loss_barrier"], abs=1e-9), key
        assert ours[key]["error_barrier"] == pytest.approx(row["error_barrier"], abs=1e-9), key
    point = ("plan", "group", "rest_from", "split", "alpha")
    ours_curves = {
        tuple(r[k] for k in point): r["loss"]
        for r in _last_step(read_csv(run / "barriers" / "curves.csv"))
    }
    theirs_curves = {tuple(r[k] for k in point): r["loss"] for r in read_csv(out / "curves.csv")}
    assert ours_curves.keys() == theirs_curves.keys()
    assert [ours_curves[k] for k in theirs_curves] == pytest.approx(
        list(theirs_curves.values()), abs=1e-9
    )
    pairing = json.loads((run / "barriers" / "summary.json").read_text())["pairing"]
    assert (pairing["mode"], pairing["init"], pairing["order"]) == ("pair", "shared", "different")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    _cli_fit(run, {"figures": False}, "--trainer.max_epochs", "4")
    return read_csv(run / "barriers" / "barriers.csv")


@pytest.mark.parametrize("save_on_train_epoch_end", [True, False])
def test_resumed_run_continues_the_history_without_gaps_or_duplicates(
    tmp_path, uninterrupted, save_on_train_epoch_end
):
    flag = ["--checkpoint.save_on_train_epoch_end", str(save_on_train_epoch_end).lower()]
    _cli_fit(tmp_path / "first", {"figures": False}, "--trainer.max_epochs", "2", *flag)
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    saved = next(
        v
        for k, v in torch.load(ckpt, weights_only=True)["callbacks"].items()
        if k.startswith("Layerwise")
    )
    # Saved after validation, the checkpoint misses the epoch-2 evaluation: the resumed run adds it.
    saved_barriers = json.loads(saved["barriers"])
    assert max(r["epoch"] for r in saved_barriers) == (2 if save_on_train_epoch_end else 1)
    _cli_fit(
        tmp_path / "resumed",
        {"figures": False},
        "--trainer.max_epochs",
        "4",
        "--ckpt_path",
        str(ckpt),
        *flag,
    )
    resumed = read_csv(tmp_path / "resumed" / "barriers" / "barriers.csv")
    assert [(r["epoch"], r["step"]) for r in resumed] == [
        (r["epoch"], r["step"]) for r in uninterrupted
    ]
    assert sorted({r["epoch"] for r in resumed}) == [0, 1, 2, 3, 4]
    assert [r["loss_barrier"] for r in resumed] == pytest.approx(
        [r["loss_barrier"] for r in uninterrupted], abs=1e-6
    )


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # 5 steps an epoch; labels count completed epochs; an epoch's last step is its end.
        (
            dict(every_n_epochs=None, every_n_steps=3, at_epochs=[0, 2]),
            [(0, 0), (0, 3), (1, 6), (1, 9), (2, 10), (2, 12), (3, 15)],
        ),
        (dict(every_n_epochs=2), [(0, 0), (2, 10), (3, 15)]),
        (dict(every_n_epochs=None, at_fit_end=True), [(3, 15)]),
    ],
)
def test_schedule_evaluates_at_the_requested_epochs_and_steps(tmp_path, schedule, expected):
    callback = LayerwiseBarrierCallback(figures=False, **schedule)
    _trainer(tmp_path, [callback], max_epochs=3).fit(
        _Pair(_mlp(), init_seed_b=1), datamodule=_data()
    )
    assert (
        sorted({(r["epoch"], r["step"]) for r in callback.history.barriers}, key=lambda t: t[1])
        == expected
    )
    # Appended after each evaluation, rewritten when an epoch's end relabels rows on disk.
    history = callback.history
    for name, rows in (("barriers.csv", history.barriers), ("curves.csv", history.curves)):
        on_disk = read_csv(tmp_path / "barriers" / name)
        assert on_disk == [{k: r[k] for k in on_disk[0]} for r in rows]


@pytest.mark.parametrize("read_back", [True, False], ids=["file_read_back", "dumped_again"])
def test_run_info_holds_the_config_lightning_saved(tmp_path, monkeypatch, read_back):
    if not read_back:  # as on a node without the config file
        monkeypatch.setattr("lwlc.run_records.saved_config", lambda callback: None)
    run = tmp_path / "run"
    _cli_fit(
        run,
        {"figures": False, "every_n_epochs": None},
        "--trainer.max_epochs",
        "1",
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        str(run),
    )
    (log_dir,) = run.glob("lightning_logs/version_*")
    recorded = yaml.safe_load((log_dir / "hparams.yaml").read_text())["lwlc"]
    saved = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert recorded["config"] == saved
    assert recorded["config"]["trainer"]["max_epochs"] == 1


def test_history_survives_a_checkpoint_exactly_and_earlier_checkpoints_still_load(tmp_path):
    rows = [
        {"epoch": 0, "step": 0, "plan": "full", "group": "all", "loss_barrier": 1 / 3},
        {"epoch": 1, "step": 5, "plan": "single", "group": "0", "loss_barrier": float("nan")},
        {"epoch": 2, "step": 10, "plan": "single", "group": "1", "loss_barrier": -1e-300},
    ]
    saved = LayerwiseBarrierCallback()
    saved.history.barriers = [dict(r) for r in rows]
    saved.history.curves = [dict(r) for r in rows[:1]]
    saved.history.done_epochs = {0, 1, 2}
    torch.save({"callbacks": {"barrier": saved.state_dict()}}, tmp_path / "ckpt")
    state = torch.load(tmp_path / "ckpt", weights_only=True)["callbacks"]["barrier"]
    earlier = {"curves": rows[:1], "barriers": rows, "done_epochs": [0, 1, 2]}
    for checkpoint in (state, earlier):
        loaded = LayerwiseBarrierCallback()
        loaded.load_state_dict(checkpoint)
        history = loaded.history
        assert history.curves == rows[:1] and history.done_epochs == {0, 1, 2}
        assert [r["group"] for r in history.barriers] == ["all", "0", "1"]
        values = [r["loss_barrier"] for r in history.barriers]
        assert values[0] == 1 / 3 and math.isnan(values[1]) and values[2] == -1e-300
        assert [type(r["step"]) for r in history.barriers] == [int] * 3


def test_appended_csv_rows_read_as_one_written_file(tmp_path):
    rows = [
        {"epoch": e, "step": 5 * e, "plan": "single", "group": "0", "loss": v, "extra": 1}
        for e, v in enumerate([0.1, 1e-20, float("nan"), -2.5, 1 / 3, float("inf")])
    ]
    columns = ["epoch", "step", "plan", "group", "loss", "missing"]
    write_csv(tmp_path / "whole.csv", rows, columns)
    write_csv(tmp_path / "grown.csv", rows[:2], columns)
    append_csv(tmp_path / "grown.csv", rows[2:5], columns)
    append_csv(tmp_path / "grown.csv", rows[5:], columns)
    assert (tmp_path / "grown.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_single_network_is_compared_with_its_reference_checkpoint(tmp_path):
    reference = _mlp()
    reinitialize(reference, seed=7)
    ref_path = tmp_path / "reference.pt"
    torch.save(reference.state_dict(), ref_path)
    callback = _callback(
        every_n_epochs=None,
        at_fit_end=True,
        alphas=[0, 0.25, 0.5, 1],
        figures=False,
        reference_ckpt=str(ref_path),
    )
    module, data = _Single(_mlp()), _data(order_seeds=(0,))
    _trainer(tmp_path, [callback], max_epochs=1).fit(module, datamodule=data)
    x, y = data.tensors("test", 1000)  # the Callback's default split, as analyze's
    a, b = module.net.state_dict(), reference.state_dict()
    losses, accuracies = naive_curve(_mlp(), a, b, set(a), [0, 0.25, 0.5, 1], "a", x, y)
    full = [r for r in callback.history.curves if r["plan"] == "full"]
    assert [r["loss"] for r in full] == pytest.approx(losses, rel=1e-5)
    assert [r["accuracy"] for r in full] == pytest.approx(accuracies, abs=1e-6)
    midpoint = next(
        r for r in callback.history.barriers if r["plan"] == "full" and r["reference"] == "midpoint"
    )
    # A difference of losses each within rel=1e-5: the barrier is within 2e-5 of the largest loss.
    assert midpoint["loss_barrier"] == pytest.approx(
        losses[2] - (losses[0] + losses[3]) / 2, abs=2e-5 * max(losses)
    )
    pairing = json.loads((tmp_path / "barriers" / "summary.json").read_text())["pairing"]
    assert pairing["mode"] == "reference" and str(ref_path) in pairing["b"]


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.parametrize("figures", [True, False])
def test_heatmaps_are_drawn_at_fit_end_without_wandb_when_asked(tmp_path, figures):
    callback = _callback(splits=["val", "test"], figures=figures)
    _trainer(tmp_path, [callback]).fit(_Pair(_mlp(), init_seed_b=1), datamodule=_data())
    drawn = sorted(p.name for p in (tmp_path / "barriers").glob("*.png"))
    expected = [
        f"heatmap_{s}_single{rest}_{m}.png"
        for s in ("test", "val")
        for rest in ("", "_rest_b")
        for m in ("error", "loss")
    ]
    assert drawn == (expected if figures else [])
    assert all(min(_png_size(tmp_path / "barriers" / name)) > 100 for name in drawn)


def test_max_batches_evaluates_the_same_samples_as_the_equal_max_samples(tmp_path):
    curves = {}
    for name, budget in (
        ("batches", dict(max_batches=2, spec=dict(batch_size=16))),
        ("samples", dict(spec=dict(max_samples=32))),
    ):
        callback = _callback(every_n_epochs=None, figures=False, **budget)
        _trainer(tmp_path / name, [callback], max_epochs=1).fit(
            _Pair(_mlp(), init_seed_b=1), datamodule=_data()
        )
        summary = json.loads((tmp_path / name / "barriers" / "summary.json").read_text())
        assert summary["samples"] == {"test": 32}  # 2 batches of 16 (< 1000)
        curves[name] = read_csv(tmp_path / name / "barriers" / "curves.csv")
    assert [r["loss"] for r in curves["batches"]] == pytest.approx(
        [r["loss"] for r in curves["samples"]], abs=1e-6
    )


def test_callback_does_not_change_training(tmp_path):
    states = []
    for callbacks in ([], [LayerwiseBarrierCallback(every_n_steps=2, figures=False)]):
        module = _Pair(_mlp(), init_seed_b=1)
        _trainer(tmp_path / str(len(callbacks)), callbacks).fit(module, datamodule=_data())
        states.append(module.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(every_n_epochs=0), "every_n_epochs=0"),
        (dict(plans=["full", "singel"]), "plans: 'singel' is not one of full, single"),
        (dict(splits=["dev"]), "splits: 'dev' is not one of train, val, test"),
        (dict(rest_from=["c"]), "'c'"),
        (dict(reference="middle"), "'middle'; choose from path, models, midpoint"),
        (dict(alphas=[0, 0.3, 1]), "needs 0.5 among the alphas"),
        (dict(alphas=[0.2, 0.5, 1]), "must include 0 and 1"),
        (dict(at_epochs=[-1]), "at_epochs holds -1"),
        (dict(every_n_epochs=None, at_fit_end=False), "nothing scheduled"),
        (dict(max_samples=0), "max_samples must be a whole number >= 1, got 0"),
        (dict(max_batches=0), "max_batches=0"),
        (dict(bn="recompute"), "bn: 'recompute' is not one of keep, reset"),
        (dict(media_every=0), "media_every=0 must be an integer >= 1"),
        (dict(spec={"plans": ["full"]}), "spec must be a MeasureSpec, got {'plans': ['full']}"),
    ],
)
def test_invalid_arguments_are_one_line_errors_naming_the_value(kwargs, message):
    with pytest.raises(LwlcError) as err:
        if isinstance(kwargs.get("spec"), dict):
            LayerwiseBarrierCallback(**kwargs)
        else:
            _callback(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_single_network_without_reference_is_a_clear_error(tmp_path):
    with pytest.raises(
        LwlcError, match="trains one network: set LayerwiseBarrierCallback reference_ckpt"
    ):
        _trainer(tmp_path, [LayerwiseBarrierCallback()]).fit(
            _Single(_mlp()), datamodule=_data((0,))
        )


DDP_SCRIPT = """
import sys
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lwlc.callbacks import LayerwiseBarrierCallback
from lwlc.core.spec import MeasureSpec
from lwlc.formats.checkpoints import read_checkpoint
from lwlc.data import DigitsDataModule
from lwlc.models import MLP
from lwlc.core.sweep import sweep
from lwlc.training import PairedModule


class Pair(PairedModule):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


root = sys.argv[1]
callback = LayerwiseBarrierCallback(
    MeasureSpec(rest_from=["a", "b"], splits=["val", "test"], max_samples=None), figures=False
)
trainer = Trainer(
    default_root_dir=root, max_epochs=2, limit_train_batches=5, accelerator="cpu", devices=2,
    strategy="ddp", logger=CSVLogger(root), enable_progress_bar=False, enable_model_summary=False,
    callbacks=[callback, ModelCheckpoint(dirpath=root + "/checkpoints", save_last=True)],
)
data = DigitsDataModule(batch_size=32, order_seeds=[0, 1])
trainer.fit(Pair(MLP(64, 10, 32, 2), init_seed_b=1), datamodule=data)
"""


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_engine_and_logs_each_row_once(tmp_path):
    script, run = tmp_path / "ddp_fit.py", tmp_path / "run"
    script.write_text(DDP_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(run)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # One process, straight from the engine, on the checkpoint of the last evaluation.
    ck = read_checkpoint(run / "checkpoints" / "last.ckpt")
    model, data = _mlp(), DigitsDataModule()
    splits = {s: data.tensors(s) for s in ("val", "test")}
    paths = make_paths(default_groups(model, splits["val"][0][:2]), ["full", "single"], ["a", "b"])
    expected = sweep(
        Evaluator(model, ck.members["a"], ck.members["b"]), paths, default_alphas(11), splits
    )
    rows = read_csv(run / "barriers" / "barriers.csv")
    assert len({(r["step"], *(r[k] for k in KEY)) for r in rows}) == len(rows), "no duplicated rows"
    ours = _by_key(_last_step(rows))
    theirs = _by_key(expected.barriers)
    assert ours.keys() == theirs.keys()
    for key, row in theirs.items():
        assert ours[key]["loss_barrier"] == pytest.approx(row["loss_barrier"], abs=1e-9), key
        assert ours[key]["error_barrier"] == pytest.approx(row["error_barrier"], abs=1e-9), key
    metrics = read_csv(next(run.glob("lightning_logs/version_*/metrics.csv")))
    logged = [r["step"] for r in metrics if r.get("barrier/midpoint/full/loss") not in ("", None)]
    assert sorted(logged) == sorted({r["step"] for r in rows}), "each evaluation logged once"


PROGRESS_FIT = {"every_n_epochs": None, "at_epochs": [0], "at_fit_end": False}


@pytest.mark.parametrize("slow", [False, True])
def test_an_evaluation_longer_than_a_second_shows_a_progress_line(
    tmp_path, monkeypatch, capfd, slow
):
    """Only an evaluation that outlasts 1 s writes its line (then erases it), on stderr."""
    measured = measure_module.prepare

    def slow_measure(*args, **kwargs):
        time.sleep(1.5)  # a real evaluation of a big model takes this long
        return measured(*args, **kwargs)

    if slow:
        monkeypatch.setattr(measure_module, "prepare", slow_measure)
    _cli_fit(
        tmp_path / "run",
        {**PROGRESS_FIT, "alphas": [0, 0.5, 1], "max_samples": 64},
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "true",
    )
    err = capfd.readouterr().err
    rows = read_csv(tmp_path / "run/barriers/barriers.csv")
    paths = len({(r["plan"], r["group"], r["rest_from"]) for r in rows})
    if slow:
        assert re.search(rf"barriers \(epoch 0\):\s+0%\|[^|]*\| 0/{paths} \[00:0[1-9]", err), err
        # Its last state, then blanks over it (leave=False: it leaves no line behind).
        assert re.search(rf"\| {paths}/{paths} [^\r\n]*[\r\n]+ +[\r\n]", err), err
    else:
        assert "barriers (epoch" not in err


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "batch_size must be a whole number >= 1, got 0"),
        ("splits", ["dev"], "splits: 'dev' is not one of train, val, test"),
        ("precision", "fp8", "precision: 'fp8' is not one of fp32, tf32, bf16"),
        ("bn", "recompute", "bn: 'recompute' is not one of keep, reset"),
    ],
)
def test_the_callback_and_the_spec_reject_a_bad_value_with_one_message(field, value, message):
    """The Callback's measurement is a MeasureSpec: a config's bad ``spec`` value gets the
    spec's own message, as analyze's flag does."""
    from lwlc.core.spec import from_flags

    with pytest.raises(LwlcError) as spec_error:
        MeasureSpec(**{field: value})
    with pytest.raises(LwlcError) as flag_error:
        from_flags(**{field: value})
    assert str(spec_error.value) == message
    assert str(flag_error.value).lstrip("-").replace("-", "_") == message.replace("-", "_")


def test_the_callbacks_measurement_options_are_exactly_measurespecs_fields():
    """One declaration per measurement option: a config's ``spec:`` keys are MeasureSpec's
    fields with its defaults (max_samples aside), and no other option of the Callback is one."""
    import inspect
    from dataclasses import fields, replace

    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(LayerwiseBarrierCallback, "callback")
    declared = vars(parser.get_defaults().callback.spec)
    spec_fields = [f.name for f in fields(MeasureSpec)]
    assert list(declared) == spec_fields
    assert replace(MeasureSpec(**declared), max_samples=None) == MeasureSpec()
    own = set(inspect.signature(LayerwiseBarrierCallback).parameters) - {"spec"}
    assert own and not own & set(spec_fields)


class _Interrupt(Callback):
    """Raises once ``epochs`` epochs are complete, as a Ctrl-C between two epochs would."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: Trainer, pl_module: object) -> None:
        if trainer.current_epoch + 1 == self.epochs:
            raise KeyboardInterrupt


def test_after_an_interrupt_the_figures_show_every_row_of_their_csv(tmp_path, monkeypatch):
    from lwlc import figures

    drawn: list[int] = []
    save = figures.save_heatmaps

    def spy(out_dir, barriers, *args, **kwargs):
        drawn.append(max(int(r["epoch"]) for r in barriers))
        return save(out_dir, barriers, *args, **kwargs)

    monkeypatch.setattr(figures, "save_heatmaps", spy)
    callback = _callback(figures=True, plans=["full", "single"], rest_from=["a"])
    trainer = _trainer(tmp_path, [callback, _Interrupt(3)], max_epochs=6)
    with pytest.raises(SystemExit):  # Lightning's answer to Ctrl-C
        trainer.fit(_Pair(_mlp(), init_seed_b=1), datamodule=_data())
    written = read_csv(tmp_path / "barriers" / "barriers.csv")
    assert max(r["epoch"] for r in written) == 3 == drawn[-1]
    assert sorted(p.name for p in (tmp_path / "barriers").glob("heatmap_*.png")) == [
        "heatmap_test_single_error.png",
        "heatmap_test_single_loss.png",
    ]
    summary = json.loads((tmp_path / "barriers" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and len(summary["evaluations"]) == 4


def test_a_subclass_chooses_its_own_schedule_with_should_evaluate(tmp_path):
    class Odd(LayerwiseBarrierCallback):
        def should_evaluate(self, step=None, epoch=None):
            return epoch is not None and epoch % 2 == 1

    callback = Odd(DEFAULT_SPEC, at_fit_end=False, figures=False)
    _trainer(tmp_path, [callback], max_epochs=4).fit(_Pair(_mlp()), datamodule=_data())
    assert [e["epoch"] for e in callback.history.evaluations()] == [1, 3]
