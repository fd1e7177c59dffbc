"""W&B: offline without credentials, the barrier history read back from the run file, and
training that goes on, with one warning, whatever W&B does."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import wandb
import yaml
from lightning.pytorch import Trainer

from lwlc.callbacks import LayerwiseBarrierCallback
from lwlc.core.errors import LwlcError
from lwlc.data import DigitsDataModule
from lwlc.loggers import WandbLogger
from lwlc.models import MLP
from lwlc.training import PairedModule
from lwlc.wandb_auth import choose_mode, has_credentials
from wandb_records import config, finished_records, history


class _Pair(PairedModule):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


pytestmark = pytest.mark.usefixtures("no_wandb_credentials")  # tests/conftest.py


def _fit(root: Path, logger: WandbLogger, epochs: int = 2, **options) -> LayerwiseBarrierCallback:
    callback = LayerwiseBarrierCallback(figures=False, **options)
    trainer = Trainer(
        default_root_dir=root,
        max_epochs=epochs,
        limit_train_batches=5,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(
        _Pair(MLP(64, 10, 32, 2), init_seed_b=1), datamodule=DigitsDataModule(order_seeds=[0, 1])
    )
    return callback


def _warnings(capsys) -> list[str]:
    return [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("lwlc: warning")
    ]


def test_mode_is_offline_without_credentials_and_online_with_them(monkeypatch, tmp_path):
    assert choose_mode(None) == "offline"
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert choose_mode(None) == "online"
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert choose_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert choose_mode(None) == "disabled"
    assert choose_mode("offline") == "offline"
    with pytest.raises(
        LwlcError, match="unknown W&B mode 'cloud'; choose from online, offline, disabled"
    ):
        choose_mode("cloud")


def test_credentials_are_found_where_wandb_looks_and_nowhere_else(monkeypatch, tmp_path):
    key = "k" * 40
    assert not has_credentials()
    # An api_key in the global settings file ($WANDB_CONFIG_DIR/settings).
    config_dir = tmp_path / "wandb-config"
    config_dir.mkdir()
    (config_dir / "settings").write_text(f"[default]\napi_key = {key}\n")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(config_dir))
    assert has_credentials()
    # A private server named in the settings: only its own netrc entry (port included) counts.
    (config_dir / "settings").write_text("[default]\nbase_url = https://wandb.lab.example:8443\n")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {key}\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert not has_credentials()
    netrc.write_text(f"machine wandb.lab.example:8443\n  login user\n  password {key}\n")
    assert has_credentials()
    # Without $NETRC, ~/_netrc is read when there is no ~/.netrc; an entry without a key is none.
    monkeypatch.delenv("NETRC")
    monkeypatch.setenv("HOME", str(tmp_path))
    (config_dir / "settings").unlink()
    (tmp_path / "_netrc").write_text("machine api.wandb.ai\n  login user\n  password x\n")
    assert has_credentials()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n")
    assert not has_credentials()


def test_online_without_credentials_is_offline_with_one_warning(tmp_path, capsys):
    assert choose_mode("online") == "offline"
    (warning,) = _warnings(capsys)
    assert "no W&B credentials were found" in warning and "`wandb login`" in warning


PROMPT_SCRIPT = """
import sys
from lwlc.loggers import WandbLogger

logger = WandbLogger(save_dir=sys.argv[1], name="tty")
logger.log_metrics({"a/train/loss": 0.25}, step=3)
logger.finalize("success")
print("mode", logger.mode)
"""


def test_online_without_credentials_under_a_terminal_never_waits_for_a_login_prompt(tmp_path):
    """W&B prompts for a login when stdin and stderr are a terminal and waits forever; the run
    must go offline instead, write its files and say so once."""
    script, home, root = tmp_path / "start.py", tmp_path / "home", tmp_path / "run"
    script.write_text(PROMPT_SCRIPT)
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env.update(HOME=str(home), WANDB_MODE="online", TERM="xterm")
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, str(script), str(root)],
        stdin=follower,
        stderr=follower,
        stdout=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    os.close(follower)
    terminal, deadline = b"", time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                try:
                    terminal += os.read(leader, 4096)
                except OSError:  # every copy of the terminal is closed: the process has ended
                    break
            elif process.poll() is not None:
                break
        stdout = process.communicate(timeout=max(deadline - time.monotonic(), 1))[0]
    finally:
        process.kill()
        os.close(leader)
    text = terminal.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    assert stdout.decode().split() == ["mode", "offline"]
    warnings = [line for line in text.splitlines() if line.startswith("lwlc: warning")]
    assert len(warnings) == 1 and "`wandb login`" in warnings[0], text[-3000:]
    (run_file,) = (root / "wandb").glob("offline-run-*/run-*.wandb")
    rows = history(finished_records(run_file))
    assert [(r["trainer/global_step"], r["a/train/loss"]) for r in rows] == [(3, 0.25)]


def test_offline_run_holds_the_barrier_history_the_heatmap_and_the_pairing(tmp_path, capsys):
    logger = WandbLogger(save_dir=str(tmp_path), name="digits")
    callback = _fit(tmp_path, logger, media_every=1)
    assert logger.mode == "offline"
    # The logger finished the run when fit ended: one complete offline run under the run dir.
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    records = finished_records(next(run_dir.glob("run-*.wandb")))
    assert any(r.WhichOneof("record_type") == "exit" for r in records)
    rows = history(records)

    FULL = "barrier/midpoint/full/loss"  # noqa: N806
    logged = {r["trainer/global_step"]: r[FULL] for r in rows if FULL in r}
    expected = {
        r["step"]: r["loss_barrier"]
        for r in callback.history.barriers
        if r["plan"] == "full" and r["reference"] == "midpoint"
    }
    assert logged.keys() == expected.keys() == {0, 5, 10}
    assert [logged[s] for s in sorted(logged)] == pytest.approx(
        [expected[s] for s in sorted(expected)], abs=1e-12
    )
    for layer in ("fc1", "fc2", "head"):
        assert sum(f"barrier/midpoint/single/{layer}/error" in r for r in rows) == 3

    # With media_every=1 the heatmaps (W&B's HTML) follow every evaluation; the charts (W&B
    # tables, serialised row by row) come once, for the last; nothing is logged twice.
    def steps(key: str, kind: str) -> list[object]:
        return [r["trainer/global_step"] for r in rows if r.get(f"{key}/_type") == kind]

    for metric in ("loss", "error"):
        key = f"barrier_heatmap/test_single_{metric}"
        assert steps(key, "html-file") == [0, 5, 10]
        heatmaps = [r for r in rows if r.get(f"{key}/_type") == "html-file"]
        last = (run_dir / "files" / heatmaps[-1][f"{key}/path"]).read_text()
        assert "through epoch 2" in last and "rest from A, test split" in last
    assert steps("barrier_layers/test/loss_table", "table-file") == [10]
    assert not [k for r in rows for k in r if k.startswith("barrier_table")]

    recorded = config(records)["lwlc"]
    assert recorded["barriers"]["pairing"]["init"] == "independent"
    assert recorded["environment"]["torch"] == torch.__version__
    assert _warnings(capsys) == []


def test_a_fit_shorter_than_the_media_schedule_logs_each_panel_once_at_the_end(tmp_path):
    logger = WandbLogger(save_dir=str(tmp_path))
    _fit(tmp_path, logger, epochs=1)  # 2 evaluations, media_every=5: none drawn while training
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    rows = history(finished_records(next(run_dir.glob("run-*.wandb"))))
    panels = {
        "barrier_heatmap/test_single_loss": "html-file",
        "barrier_heatmap/test_single_error": "html-file",
        "barrier_layers/test/loss_table": "table-file",
        "barrier_layers/test/error_table": "table-file",
    }
    for key, kind in panels.items():
        assert [r["trainer/global_step"] for r in rows if r.get(f"{key}/_type") == kind] == [5]


def test_an_offline_run_builds_no_telemetry_exporter_for_wandbs_server(tmp_path):
    # W&B builds OpenTelemetry exporters for its server on a run's first log unless its
    # process-wide settings are offline; lwlc's offline run must not (imports, network tries).
    script = (
        "import sys\n"
        "from lwlc.loggers import WandbLogger\n"
        f"logger = WandbLogger(save_dir={str(tmp_path)!r}, mode='offline')\n"
        "logger.log_metrics({'x': 1.0}, step=0)\n"
        "logger.finalize('success')\n"
        "exporters = [m for m in sys.modules if m.startswith('opentelemetry.exporter')]\n"
        "print(logger.mode, sorted(exporters))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "offline []"


def test_wandb_failing_to_start_warns_once_and_training_goes_on(tmp_path, capsys, monkeypatch):
    def broken_init(*args, **kwargs):
        raise RuntimeError("wandb-core did not start\nsecond line of the error")

    monkeypatch.setattr(wandb, "init", broken_init)
    logger = WandbLogger(save_dir=str(tmp_path))
    callback = _fit(tmp_path, logger)
    assert logger.mode == "disabled"
    assert len(callback.history.barriers) > 0 and (tmp_path / "barriers" / "barriers.csv").exists()
    warnings = _warnings(capsys)
    assert len(warnings) == 1
    assert "W&B logging is off" in warnings[0] and "wandb-core did not start" in warnings[0]


def test_online_start_failure_falls_back_to_offline(tmp_path, capsys, monkeypatch):
    real_init = wandb.init

    def unreachable_server(*args, **kwargs):
        if kwargs.get("mode") == "online":
            raise TimeoutError("no answer from api.wandb.ai")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", unreachable_server)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    logger = WandbLogger(save_dir=str(tmp_path))
    assert logger.mode == "online"
    _fit(tmp_path, logger, epochs=1)
    assert logger.mode == "offline"
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and "logging offline instead" in warnings[0]


def test_missing_wandb_package_warns_once_and_training_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # `import wandb` now fails
    logger = WandbLogger(save_dir=str(tmp_path))
    callback = _fit(tmp_path, logger, epochs=1)
    assert logger.mode == "disabled" and len(callback.history.barriers) > 0
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and "import of wandb halted" in warnings[0]


def test_a_failing_log_call_turns_wandb_off_with_one_warning(tmp_path, capsys, monkeypatch):
    logger = WandbLogger(save_dir=str(tmp_path))

    def failing_log(*args, **kwargs):
        raise ConnectionError("pipe to wandb-core closed")

    monkeypatch.setattr(type(logger.experiment), "log", failing_log)
    callback = _fit(tmp_path, logger)
    assert logger.mode == "disabled"
    assert {r["step"] for r in callback.history.barriers} == {0, 5, 10}, (
        "training and measuring went on"
    )
    warnings = _warnings(capsys)
    assert len(warnings) == 1 and "pipe to wandb-core closed" in warnings[0]


def test_fit_then_test_finishes_each_stage_and_resumes_the_same_run(tmp_path):
    logger = WandbLogger(save_dir=str(tmp_path))
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=3,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module, data = _Pair(MLP(64, 10, 32, 2)), DigitsDataModule(order_seeds=[0, 1])
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data)
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    ids = {next(r.glob("run-*.wandb")).stem for r in runs}
    assert len(runs) == 2 and len(ids) == 1, "two stages, one run id"
    for run_dir in runs:
        records = finished_records(next(run_dir.glob("run-*.wandb")))
        assert any(r.WhichOneof("record_type") == "exit" for r in records)
    assert any(
        "a/test/acc" in row for row in history(finished_records(next(runs[1].glob("run-*.wandb"))))
    )


def test_lwlc_fit_records_its_config_once_and_test_continues_its_run(tmp_path):
    """The CLI's W&B run holds the config under ``lwlc`` only (not Lightning's module and data
    hyper-parameters beside it), and ``lwlc test`` of the fit's checkpoint in its folder goes on
    in the same run (one id) instead of starting another of the same name."""
    from lwlc.commands.cli import main
    from lwlc_runs import DIGITS

    root = tmp_path / "run"
    common = ["--config", DIGITS, "--trainer.default_root_dir", str(root)]
    common += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5"])
    main(["test", *common, "--ckpt_path", str(root / "checkpoints" / "last.ckpt")])
    runs = sorted((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, "a fit and a test"
    assert len({next(r.glob("run-*.wandb")).stem for r in runs}) == 1, "one run id"
    fit_records = finished_records(next(runs[0].glob("run-*.wandb")))
    recorded = config(fit_records)
    assert {k for k in recorded if not k.startswith("_wandb")} == {"lwlc"}
    saved = yaml.safe_load((runs[0] / "files" / "config.yaml").read_text())
    assert recorded["lwlc"]["config"] == saved
    assert saved["trainer"]["max_epochs"] == 1
    assert set(recorded["lwlc"]) == {"config", "environment", "barriers"}
    test_rows = history(finished_records(next(runs[1].glob("run-*.wandb"))))
    assert any("a/test/acc" in row for row in test_rows)
    assert not any("a/test/acc" in row for row in history(fit_records))


def test_the_demo_runs_wandb_values_are_lwlc_analyzes_for_its_last_checkpoint(tmp_path, capsys):
    """`make demo` as a user runs it (shorter): what W&B shows at the end of fit is what
    `lwlc analyze` prints and writes for the same checkpoint, under the same reference names."""
    from conftest import CONFIGS
    from lwlc.commands.cli import main
    from lwlc.formats.io import read_csv

    root = tmp_path / "demo"
    main(["fit", "--config", str(CONFIGS / "digits_mlp.yaml"), "--trainer.max_epochs", "2",
          "--trainer.default_root_dir", str(root),
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    main(["analyze", "--ckpt", str(root / "checkpoints" / "last.ckpt"), "--out",
          str(root / "analysis"), "--no-plots"])  # fmt: skip
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    rows = history(finished_records(next(run_dir.glob("run-*.wandb"))))
    last = {k: v for r in rows for k, v in r.items() if k.startswith("barrier/")}
    analyzed = read_csv(root / "analysis" / "barriers.csv")
    compared = 0
    for r in analyzed:
        if r["plan"] not in ("full", "single"):
            continue
        rest = "" if r["plan"] == "full" or r["rest_from"] == "a" else "/rest_b"
        group = "" if r["plan"] == "full" else f"/{r['group']}"
        name = f"barrier/{r['reference']}/{r['plan']}{group}{rest}/loss"
        assert last[name] == pytest.approx(float(r["loss_barrier"]), abs=1e-6), name
        compared += 1
    assert compared == 3 * (1 + 2 * 3)  # 3 references x (full + 3 layers x rest a, b)
    full_path = next(r for r in analyzed if r["plan"] == "full" and r["reference"] == "path")
    console = capsys.readouterr().out
    assert f"{float(full_path['loss_barrier']):.4f}" in console


def _chart(run_dir: Path, rows: list[dict[str, object]], key: str) -> list[list[object]]:
    """The data of the last W&B line chart logged under ``key`` (step, line, value)."""
    last = [r for r in rows if r.get(f"{key}_table/_type") == "table-file"][-1]
    table = json.loads((run_dir / "files" / str(last[f"{key}_table/path"])).read_text())
    assert table["columns"] == ["step", "lineKey", "lineVal"]
    return table["data"]


def test_wandb_scalars_charts_and_csv_agree_in_unit_and_epoch(tmp_path):
    """Each evaluation's W&B row carries the CSV's epoch (completed epochs, 0 = the
    initialisation) as ``barrier/epoch`` (``epoch`` stays Lightning's running index), its error
    barriers as the CSV holds them (fractions), and the
    barrier_layers charts plot the same numbers."""
    from lwlc.formats.io import read_csv

    _fit(tmp_path, WandbLogger(save_dir=str(tmp_path)), epochs=2, media_every=1)
    written = read_csv(tmp_path / "barriers" / "barriers.csv")
    epoch_of = {r["step"]: r["epoch"] for r in written}
    assert sorted(epoch_of.items()) == [(0, 0), (5, 1), (10, 2)]
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    rows = history(finished_records(next(run_dir.glob("run-*.wandb"))))
    logged = [r for r in rows if "barrier/midpoint/full/error" in r]
    assert [(r["trainer/global_step"], r["barrier/epoch"]) for r in logged] == sorted(
        epoch_of.items()
    )
    for csv_row in written:
        rest = "/rest_b" if csv_row["rest_from"] == "b" else ""
        path = "full" if csv_row["plan"] == "full" else f"single/{csv_row['group']}{rest}"
        (row,) = [r for r in logged if r["trainer/global_step"] == csv_row["step"]]
        for metric in ("loss", "error"):
            name = f"barrier/{csv_row['reference']}/{path}/{metric}"
            assert row[name] == pytest.approx(csv_row[f"{metric}_barrier"], abs=1e-12), name
    midpoint = {
        (r["step"], "full" if r["plan"] == "full" else f"single/{r['group']}"
         + ("/rest_b" if r["rest_from"] == "b" else "")): r
        for r in written
        if r["reference"] == "midpoint"
    }  # fmt: skip
    for metric in ("loss", "error"):
        chart = _chart(run_dir, rows, f"barrier_layers/test/{metric}")
        assert len(chart) == len(midpoint)
        for step, line, value in chart:
            expected = midpoint[(step, line)][f"{metric}_barrier"]
            assert value == pytest.approx(expected, abs=1e-12), (metric, step, line)


def test_media_are_redrawn_every_n_evaluations_and_after_the_last(tmp_path):
    """media_every=2 over 4 evaluations (steps 0, 5, 10, 15): the heatmaps after the 2nd and
    the 4th (the last), the charts after the last alone; nothing twice."""
    _fit(tmp_path, WandbLogger(save_dir=str(tmp_path)), epochs=3, media_every=2)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    rows = history(finished_records(next(run_dir.glob("run-*.wandb"))))

    def steps(key: str, kind: str) -> list[object]:
        return [r["trainer/global_step"] for r in rows if r.get(f"{key}/_type") == kind]

    assert steps("barrier_heatmap/test_single_loss", "html-file") == [5, 15]
    assert steps("barrier_heatmap/test_single_error", "html-file") == [5, 15]
    assert steps("barrier_layers/test/error_table", "table-file") == [15]
    assert not [k for r in rows for k in r if k.startswith("barrier_curves")]


def test_a_validate_of_a_merged_checkpoint_leaves_the_pairs_wandb_run_untouched(tmp_path):
    """`lwlc validate --ckpt_path merged.ckpt` in the pair's folder logs into a run of its own:
    the pair's run keeps its id's only files, byte for byte."""
    from lwlc.commands.cli import main
    from lwlc_runs import DIGITS

    root = tmp_path / "run"
    common = ["--config", DIGITS, "--trainer.default_root_dir", str(root)]
    common += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5"])
    (fit_run,) = (root / "wandb").glob("offline-run-*")
    fit_file = next(fit_run.glob("run-*.wandb"))
    finished_records(fit_file)  # wandb-core may still be writing it
    before = fit_file.read_bytes()
    merged = tmp_path / "merged.ckpt"
    main(["merge", "--ckpt", str(root / "checkpoints" / "last.ckpt"), "--out", str(merged)])
    main(["validate", *common, "--ckpt_path", str(merged)])
    assert fit_file.read_bytes() == before
    (validate_run,) = set((root / "wandb").glob("offline-run-*")) - {fit_run}
    validate_file = next(validate_run.glob("run-*.wandb"))
    assert validate_file.stem != fit_file.stem, "the validate has a run id of its own"
    validated = history(finished_records(validate_file))
    assert any("a/val/acc" in r or "val/acc" in r for r in validated)
