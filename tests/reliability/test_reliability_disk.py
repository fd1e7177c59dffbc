"""A full disk never destroys finished work (README, Reliability).

Each test writes onto a small disk and fills it at a chosen moment: a real tmpfs where the tests
run as root and can mount one, and always an injected variant, a directory whose capacity is
enforced where a file system may report ENOSPC (at fsync, or on a write through fsspec, which
Lightning's loggers use). Then ``lwlc fit``, ``analyze``, ``plot``, ``merge`` and
``io.append_csv`` must end with one line naming the file and the space left, exit 2, keep every
earlier file byte for byte and leave no temporary file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fsspec.implementations.local import LocalFileOpener
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.environments import LightningEnvironment
from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO

from lwlc import checkpoint_io
from lwlc.commands.cli import main
from lwlc.core.errors import LwlcError
from lwlc.formats import io, lock
from lwlc_runs import fit_pair

DISKS: dict[
    str, Tmpfs | Injected
] = {}  # by root, for FillDisk (a callback built by lwlc fit from a config)
# what a command's lock (lwlc.formats.lock) takes, so that the disk fills at its first real file
ROOM_FOR_A_LOCK = lock.RESERVE + 8192
FREE = re.compile(r"\((\d+(?:\.\d+)? (?:B|KiB|MiB|GiB|TiB)) free on (\S+)\)")


class Disk:
    """A small disk at ``root``; ``fill(leave)`` leaves only ``leave`` bytes free on it, ``free()``
    makes room again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.saved: dict[str, bytes] = {}

    def files(self) -> dict[str, bytes]:
        """Every file on the disk but the filler, by relative path."""
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and p.name != "filler"
        }


class Tmpfs(Disk):
    """A tmpfs of 4 MiB, filled with a file of zeros."""

    def fill(self, leave: int = 0) -> None:
        fd = os.open(self.root / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for block in (1 << 16, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * block)
                except OSError as err:
                    assert err.errno == errno.ENOSPC
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
        finally:
            os.close(fd)

    def free(self) -> None:
        (self.root / "filler").unlink()


class Injected(Disk):
    """A directory of limited capacity: a file under it synced (``os.fsync``) or written through
    fsspec while its files hold more than the capacity fails with ENOSPC, as on a file system
    that reports a full disk late (NFS, delayed allocation)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(root)
        self.capacity: int | None = None
        real_fsync, real_write = os.fsync, LocalFileOpener.write

        def fsync(fd: int) -> None:
            real_fsync(fd)
            if self._over(os.readlink(f"/proc/self/fd/{fd}"), 0):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def write(opener: LocalFileOpener, data: Any) -> int:
            if self._over(opener.path, len(data)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(opener, data)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(LocalFileOpener, "write", write)

    def _over(self, path: str, extra: int) -> bool:
        if self.capacity is None or not Path(path).is_relative_to(self.root):
            return False
        used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return used + extra > self.capacity

    def fill(self, leave: int = 0) -> None:
        self.capacity = sum(len(b) for b in self.files().values()) + leave

    def free(self) -> None:
        self.capacity = None


def _mount(root: Path) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture(params=["tmpfs", "injected"])
def disk(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Disk]:
    """A small disk: a real tmpfs (where it can be mounted, else injected) or the injected one."""
    root = tmp_path / "disk"
    root.mkdir()
    mounted = request.param == "tmpfs" and _mount(root)
    made = Tmpfs(root) if mounted else Injected(root, monkeypatch)
    DISKS[str(root)] = made
    try:
        yield made
    finally:
        del DISKS[str(root)]
        if mounted and subprocess.run(["umount", str(root)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(root)], check=True)  # a file left open


class FillDisk(Callback):
    """Fills the disk at ``root`` just before the checkpoints of epoch ``epoch`` are saved, after
    keeping the files there; its own state then grows by ``grow`` bytes, so that a checkpoint
    rewritten in place cannot fit where the old one was."""

    def __init__(self, root: str, epoch: int = 1, grow: int = 100_000) -> None:
        self.root, self.epoch, self.grow, self.filled = root, epoch, grow, False

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            disk = DISKS[self.root]
            disk.saved = disk.files()
            disk.fill(0)
            self.filled = True

    def state_dict(self) -> dict[str, Any]:
        return {"pad": "x" * self.grow if self.filled else ""}


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line lwlc printed on stderr (asserting there is exactly one, no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lwlc: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def assert_disk_full_line(line: str, file: Path) -> None:
    """``line`` names ``file``, the space left and the mount point holding it."""
    assert line.startswith(f"lwlc: error: no space left on device writing {file} ("), line
    found = FREE.search(line)
    assert found, line
    mount = Path(found.group(2))
    assert file.is_relative_to(mount) and os.path.ismount(mount), line


def expect_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_pair(tmp_path_factory.mktemp("runs") / "pair")


# ------------------------------------------------------------------ fit
def test_fit_keeps_the_last_good_checkpoint_when_the_disk_fills(disk, tmp_path, capsys):
    run = disk.root / "run"
    extra = tmp_path / "fill.yaml"
    callback = {
        "class_path": "test_reliability_disk.FillDisk",
        "init_args": {"root": str(disk.root)},
    }
    extra.write_text(json.dumps({"trainer": {"callbacks": [callback]}}))
    with pytest.raises(SystemExit) as stop:
        fit_pair(run, "--config", str(extra), "--trainer.max_epochs", "2")
    assert stop.value.code == 2
    assert_disk_full_line(error_line(capsys), run / "checkpoints" / "last.ckpt")
    kept = disk.saved
    assert "run/checkpoints/last.ckpt" in kept
    assert any(name.startswith("run/checkpoints/best-epoch=0") for name in kept), kept
    assert kept.pop("run/.lwlc.lock")  # the run's lock, held while it ran
    # Byte for byte the files of epoch 0: last.ckpt intact, no 0-byte best-*.ckpt, no temp file.
    assert disk.files() == kept
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


def test_lwlc_fit_saves_through_the_atomic_plugin_with_the_users_plugins_and_ddp():
    def built(**kwargs: Any) -> Any:
        trainer = Trainer(accelerator="cpu", logger=False, **kwargs)
        checkpoint_io.install(trainer.strategy)
        return trainer.strategy.checkpoint_io

    assert type(built()) is checkpoint_io.AtomicCheckpointIO
    ddp = built(devices=2, strategy="ddp", plugins=[LightningEnvironment()])
    assert type(ddp) is checkpoint_io.AtomicCheckpointIO
    wrapped = built(plugins=[AsyncCheckpointIO()])
    assert type(wrapped) is AsyncCheckpointIO
    assert type(wrapped.checkpoint_io) is checkpoint_io.AtomicCheckpointIO

    class Own(TorchCheckpointIO):
        pass

    assert type(built(plugins=[Own()])) is Own


def test_a_full_disk_in_lightnings_own_writes_is_one_line_naming_the_file(disk, tmp_path, capsys):
    run = tmp_path / "run"
    logs = disk.root / "logs"
    extra = tmp_path / "fill.yaml"
    callback = {
        "class_path": "test_reliability_disk.FillDisk",
        "init_args": {"root": str(disk.root), "epoch": 0, "grow": 0},
    }
    extra.write_text(json.dumps({"trainer": {"callbacks": [callback]}}))
    logger = ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger"]
    logger += [
        "--trainer.logger.save_dir",
        str(logs),
        "--trainer.logger.flush_logs_every_n_steps",
        "1",
    ]
    with pytest.raises(SystemExit) as stop:
        fit_pair(run, "--config", str(extra), *logger, batches=3)
    assert stop.value.code == 2
    metrics = logs / "lightning_logs" / "version_0" / "metrics.csv"
    assert_disk_full_line(error_line(capsys), metrics)


# ------------------------------------------------------------------ analyze
def test_analyze_on_a_full_disk_keeps_its_rows_and_marks_the_summary_failed(
    disk, pair, monkeypatch, capsys, tmp_path
):
    from lwlc.results import files as results_files

    out = disk.root / "analysis"
    alphas = 101
    real_write_csv = results_files.write_csv

    def write_csv(path: Path, rows: list, columns: Any) -> None:
        """Fill the disk just before the curves of the fifth path are written, leaving room for
        summary.json (and its error) but not for the curves."""
        if path.name == "curves.csv" and len(rows) >= 5 * alphas and not disk.saved:
            disk.saved = disk.files()
            disk.fill(len((out / "summary.json").read_bytes()) + 8192)
        real_write_csv(path, rows, columns)

    monkeypatch.setattr(results_files, "write_csv", write_csv)
    argv = ["analyze", "--ckpt", str(pair), "--out", str(out), "--no-plots", "--splits", "val"]
    argv += ["--plans", "full,single", "--num-alphas", str(alphas), "--max-samples", "50"]
    expect_exit_2([*argv, "--chunk-size", "1"])
    assert_disk_full_line(error_line(capsys), out / "curves.csv")
    before, after = disk.saved, disk.files()
    assert before.pop("analysis/.lwlc.lock")  # held while it ran, gone once it ended
    assert (
        set(after)
        == set(before)
        == {f"analysis/{name}" for name in results_files.RESULT_FILES if name != "measures.csv"}
    )  # no --measures asked
    for name in ("curves.csv", "barriers.csv"):
        assert after[f"analysis/{name}"] == before[f"analysis/{name}"]
    rows = io.read_csv(out / "barriers.csv")
    assert len({(r["plan"], r["group"], r["rest_from"]) for r in rows}) == 4
    summary = json.loads(after["analysis/summary.json"])
    assert summary["status"] == "failed"
    assert "no space left on device writing" in summary["error"]
    # With room again, --resume finishes the failed run as if it had never stopped.
    disk.free()
    main([*argv, "--chunk-size", "1", "--resume"])
    whole = tmp_path / "whole"
    main([*argv[:4], str(whole), *argv[5:]])
    for name in ("curves.csv", "barriers.csv"):
        assert (out / name).read_bytes() == (whole / name).read_bytes()
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_analyze_records_its_failure_even_on_a_disk_left_with_no_byte_free(
    disk, pair, monkeypatch, capsys
):
    """The room the folder's lock keeps is given back for summary.json's "failed"."""
    from lwlc.results import files as results_files

    out = disk.root / "analysis"
    real_write_csv = results_files.write_csv

    def write_csv(path: Path, rows: list, columns: Any) -> None:
        if path.name == "curves.csv" and rows and not disk.saved:
            disk.saved = disk.files()
            disk.fill(0)
        real_write_csv(path, rows, columns)

    monkeypatch.setattr(results_files, "write_csv", write_csv)
    argv = ["analyze", "--ckpt", str(pair), "--out", str(out), "--no-plots", "--splits", "val"]
    expect_exit_2([*argv, "--plans", "full", "--max-samples", "50"])
    assert_disk_full_line(error_line(capsys), out / "curves.csv")
    after = disk.files()
    assert json.loads(disk.saved["analysis/summary.json"])["status"] == "running"
    summary = json.loads(after.pop("analysis/summary.json"))
    assert summary["status"] == "failed" and "no space left on device" in summary["error"]
    assert set(disk.saved) - set(after) == {"analysis/summary.json", "analysis/.lwlc.lock"}
    assert all(after[name] == disk.saved[name] for name in after)  # the CSVs as they were


# ------------------------------------------------------------------ plot and merge
@pytest.fixture(scope="module")
def results(pair: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results") / "analysis"
    main(["analyze", "--ckpt", str(pair), "--out", str(out), "--no-plots", "--splits", "val"])
    return out


def test_plot_on_a_full_disk_keeps_the_old_figure(disk, results, capsys):
    figures = disk.root / "figures"
    figures.mkdir()
    old = figures / "curves_val.png"
    old.write_bytes(b"the figure of an earlier plot")
    disk.fill(ROOM_FOR_A_LOCK)
    expect_exit_2(["plot", str(results), "--out", str(figures)])
    assert_disk_full_line(error_line(capsys), old)
    assert disk.files() == {"figures/curves_val.png": b"the figure of an earlier plot"}


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_merge_on_a_full_disk_leaves_no_output(disk, pair, suffix, capsys):
    out = disk.root / f"merged{suffix}"
    disk.fill(ROOM_FOR_A_LOCK)
    expect_exit_2(["merge", "--ckpt", str(pair), "--out", str(out)])
    assert_disk_full_line(error_line(capsys), out)
    assert disk.files() == {}


# ------------------------------------------------------------------ append_csv
def test_a_failed_append_leaves_exactly_the_earlier_rows(disk):
    path = disk.root / "barriers.csv"
    columns = ["step", "group", "barrier"]
    first = [{"step": s, "group": "fc1", "barrier": s / 7} for s in range(3)]
    io.write_csv(path, first, columns)
    before = path.read_bytes()
    disk.fill(0)
    more = [{"step": s, "group": f"layer{s}", "barrier": s / 3} for s in range(3, 1003)]
    with pytest.raises(LwlcError) as failed:
        io.append_csv(path, more, columns)
    assert_disk_full_line(f"lwlc: error: {failed.value}", path)
    assert path.read_bytes() == before
    assert io.read_csv(path) == [
        {"step": float(r["step"]), "group": r["group"], "barrier": r["barrier"]} for r in first
    ]
