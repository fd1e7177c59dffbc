"""``lwlc analyze --resume`` on a results folder that a crash, a disk or a person damaged.

Each case damages a real, finished results folder the way it happens (a torn last row, a
missing column, foreign bytes, a summary of the wrong type) and runs the same command with
``--resume``: damage is one line naming the file and ``--overwrite``, exit 2, nothing rewritten;
a torn last row is computed again, and the folder then equals an undamaged run's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lwlc.commands.cli import main
from lwlc_runs import fit_pair

COMMON = ["--plans", "full,single", "--alphas", "0,0.5,1", "--max-samples", "64", "--no-plots"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A short pair and a complete analysis of it (the reference a resume must reproduce)."""
    ckpt = fit_pair(tmp_path_factory.mktemp("pair"))
    out = tmp_path_factory.mktemp("results") / "done"
    main(["analyze", "--ckpt", str(ckpt), "--out", str(out), *COMMON])
    return ckpt, out


def copy_results(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def resume(ckpt: Path, out: Path) -> None:
    main(["analyze", "--ckpt", str(ckpt), "--out", str(out), *COMMON, "--resume"])


def _drop_column(name: str, column: str) -> Callable[[Path], None]:
    def damage(out: Path) -> None:
        lines = (out / name).read_text().splitlines()
        index = lines[0].split(",").index(column)
        cut = [",".join(f for i, f in enumerate(line.split(",")) if i != index) for line in lines]
        (out / name).write_text("\n".join(cut) + "\n")

    return damage


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda out: (out / name).write_bytes(content)


def _append(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda out: (out / name).write_bytes((out / name).read_bytes() + content)


def _middle_row(name: str, replace: Callable[[str], str]) -> Callable[[Path], None]:
    def damage(out: Path) -> None:
        lines = (out / name).read_text().splitlines()
        lines[2] = replace(lines[2])
        (out / name).write_text("\n".join(lines) + "\n")

    return damage


DAMAGE = {
    "summary.json is a list": (_write("summary.json", b"[1, 2, 3]\n"), "not an object"),
    "summary.json is a string": (_write("summary.json", b'"done"\n'), "not an object"),
    "summary.json checkpoints of the wrong type": (
        lambda out: (out / "summary.json").write_text(
            json.dumps({**json.loads((out / "summary.json").read_text()), "checkpoints": "x"})
        ),
        "'checkpoints' is a str",
    ),
    "summary.json not UTF-8": (_write("summary.json", b'{"status": "\xff\xfe"}'), "UTF-8"),
    "summary.json not JSON": (_write("summary.json", b"{status: complete"), "not JSON"),
    "curves.csv without loss": (_drop_column("curves.csv", "loss"), "no column loss"),
    "barriers.csv without reference": (
        _drop_column("barriers.csv", "reference"),
        "no column reference",
    ),
    "curves.csv with foreign bytes": (
        _append("curves.csv", b"full,all,a,test,0.5,\xff\xfe,1\n"),
        "UTF-8",
    ),
    "barriers.csv a short row in the middle": (
        _middle_row("barriers.csv", lambda line: line.rsplit(",", 1)[0]),
        "line 3",
    ),
    "curves.csv a word for a number": (
        _middle_row("curves.csv", lambda line: line.rsplit(",", 1)[0] + ",lots"),
        "not a number",
    ),
    "barriers.csv an infinite barrier": (
        _middle_row("barriers.csv", lambda line: line.rsplit(",", 1)[0] + ",inf"),
        "neither finite nor nan",
    ),
    "curves.csv empty": (_write("curves.csv", b""), "empty"),
}


@pytest.mark.parametrize("case", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_folder_is_one_line_and_left_as_it_is(
    case: str, finished: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, done = finished
    out = copy_results(done, tmp_path / "out")
    damage, reason = DAMAGE[case]
    damage(out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        resume(ckpt, out)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[-1].startswith("lwlc: error: --resume: ") and "Traceback" not in "\n".join(err)
    assert reason in err[-1] and "--overwrite" in err[-1]
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before, "a damaged folder changed"


@pytest.mark.parametrize("name", ["barriers.csv", "curves.csv"])
@pytest.mark.parametrize("keep", [0.4, 0.9])
def test_a_torn_last_row_is_computed_again(
    name: str,
    keep: float,
    finished: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The last row cut at some byte (as a killed append leaves it): resumed, the folder equals
    the undamaged one, the torn row rewritten whole."""
    ckpt, done = finished
    out = copy_results(done, tmp_path / "out")
    data = (out / name).read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    (out / name).write_bytes(data[: last + int((len(data) - 1 - last) * keep)])
    resume(ckpt, out)
    assert "cut short" in capsys.readouterr().err
    for f in ("curves.csv", "barriers.csv"):
        assert (out / f).read_text() == (done / f).read_text(), f


def test_stray_temporary_files_of_a_killed_run_are_removed(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, done = finished
    out = copy_results(done, tmp_path / "out")
    strays = [out / ".curves.csv.k3j_x9.tmp", out / ".summary.json.abc123.tmp"]
    for s in strays:
        s.write_text("half a file")
    mine = out / "notes.tmp"
    mine.write_text("a user's file")
    resume(ckpt, out)
    assert not any(s.exists() for s in strays)
    assert mine.read_text() == "a user's file"
    assert (out / "barriers.csv").read_text() == (done / "barriers.csv").read_text()
