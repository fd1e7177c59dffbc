"""Output folders and ``lwlc plot``'s inputs: every mistake is one line, exit 2, nothing written.

Commands run as a user types them (``lwlc.commands.cli.main``) on one short real ``lwlc fit`` of the
digits demo; the broken ``--out`` paths and damaged CSVs are real files made for each case, and
the file trees are compared byte for byte before and after.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from lwlc.commands.cli import main
from lwlc_runs import fit_pair

# A recipe for ``lwlc experiment`` that runs in no time: the runner's --out handling is tested.
TINY_RECIPE = """
CLAIM = "a recipe of the test suite"


def run(out, scale):
    (out / "numbers.txt").write_text(scale)
    return {"x": 1.0}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short real ``lwlc fit`` of the digits pair (the demo config logs barriers/)."""
    root = tmp_path_factory.mktemp("fit") / "run"
    fit_pair(root)
    return root


@pytest.fixture()
def recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$LWLC_EXPERIMENTS`` holding the recipe ``tiny`` (outside the trees compared)."""
    root = tmp_path / "recipes"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "recipe.py").write_text(TINY_RECIPE)
    monkeypatch.setenv("LWLC_EXPERIMENTS", str(root))
    return root


def tree(root: Path) -> dict[str, str]:
    """Every path below ``root``: a link's target, a file's sha256, or ``dir``."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            if path.is_symlink():
                found[str(path)] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[str(path)] = "dir"
            else:
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one error line of ``lwlc <argv>``, which must exit with code 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lwlc: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- --out that can never be made
def workspace(root: Path) -> Path:
    """A folder of things in the way of an output: a file, link loops, dangling links."""
    root.mkdir()
    (root / "somefile.txt").write_text("a file\n")
    for loop in ("loop", "loop.ckpt"):
        (root / loop).symlink_to(loop)
    (root / "dangling").symlink_to("nowhere/x")
    (root / "dangling.ckpt").symlink_to("nowhere/m.ckpt")
    return root


# kind: (--out of a folder command, --out of merge or None, what the line must say with ws/)
BAD_OUTS = {
    "below-a-file": (
        "somefile.txt/sub",
        "somefile.txt/m.ckpt",
        "{ws}/somefile.txt is a file, not a folder",
    ),
    "a-file": ("somefile.txt", None, "{out}: it is a file, not a folder"),
    "link-loop": (
        "loop",
        "loop.ckpt",
        "{out} is a symbolic link that loops back on itself",
    ),
    "below-a-link-loop": (
        "loop/sub",
        "loop/m.ckpt",
        "{ws}/loop is a symbolic link that loops back on itself",
    ),
    "dangling-link": (
        "dangling",
        "dangling.ckpt",
        "{out} is a symbolic link to {target}, which does not exist",
    ),
}
COMMANDS: dict[str, Callable[[Path, str], list[str]]] = {
    "analyze": lambda run, out: [
        "analyze", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", out, "--no-plots"
    ],
    "merge": lambda run, out: [
        "merge", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--groups", "fc1",
        "--alpha", "0.5", "--out", out,
    ],
    "plot": lambda run, out: ["plot", str(run), "--out", out],
    "experiment": lambda run, out: ["experiment", "tiny", "--smoke", "--out", out],
}  # fmt: skip
OUT_CASES = [
    pytest.param(command, kind, id=f"{command}-{kind}")
    for command in COMMANDS
    for kind, (folder, file, _) in BAD_OUTS.items()
    if (file if command == "merge" else folder) is not None
]


@pytest.mark.parametrize(("command", "kind"), OUT_CASES)
def test_an_out_that_cannot_be_made_is_one_line_and_nothing_is_written(
    command: str,
    kind: str,
    run_dir: Path,
    recipes: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ws = workspace(tmp_path / "ws")
    folder, file, said = BAD_OUTS[kind]
    out = str(ws / (file if command == "merge" else folder))
    before = {**tree(ws), **tree(run_dir)}
    line = refused(capsys, COMMANDS[command](run_dir, out))
    assert line.startswith(f"lwlc: error: cannot write to --out {out}: "), line
    target = os.readlink(out) if Path(out).is_symlink() else None
    assert said.format(ws=ws, out=out, target=target) in line
    assert {**tree(ws), **tree(run_dir)} == before


def test_experiment_overwrite_through_a_linked_folder_replaces_the_run_there(
    recipes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out may be a link to a folder; --overwrite empties that folder and keeps the link,
    and a link inside the earlier run is removed as a link, not followed."""
    real, outside = tmp_path / "disk" / "tiny-smoke", tmp_path / "outside"
    real.mkdir(parents=True)
    outside.mkdir()
    (outside / "precious.txt").write_text("not lwlc's\n")
    (real / ".lwlc-experiment").touch()
    (real / "old.txt").write_text("earlier run\n")
    (real / "old_dir").mkdir()
    (real / "old_dir" / "x.txt").write_text("earlier run\n")
    (real / "elsewhere").symlink_to(outside)
    link = tmp_path / "tiny-smoke"
    link.symlink_to(real)
    kept = tree(outside)

    main(["experiment", "tiny", "--smoke", "--out", str(link), "--overwrite"])

    assert link.is_symlink() and os.readlink(link) == str(real)
    assert sorted(p.name for p in real.iterdir()) == [
        ".lwlc-experiment",
        "numbers.txt",
        "result.json",
    ]
    assert (real / "numbers.txt").read_text() == "smoke"
    assert tree(outside) == kept
    assert f"result: {link / 'result.json'}" in capsys.readouterr().out


def test_plot_draws_a_run_its_barriers_and_an_analysis_through_a_linked_out(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The folders lwlc plot accepts still draw, into the folder a --out link points to."""
    analysis = tmp_path / "analysis"
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    fast = ["--plans", "single", "--num-alphas", "3", "--max-samples", "64"]
    main(["analyze", "--ckpt", ckpt, "--out", str(analysis), "--no-plots", *fast])
    for source, results in (
        (run_dir, run_dir / "barriers"),
        (run_dir / "barriers", run_dir / "barriers"),
        (analysis, analysis),
    ):
        real = tmp_path / f"figures_{source.name}"
        real.mkdir()
        link = tmp_path / f"link_{source.name}"
        link.symlink_to(real)
        capsys.readouterr()
        main(["plot", str(source), "--out", str(link)])
        printed = capsys.readouterr().out.split()
        with (results / "curves.csv").open(newline="") as f:
            splits = {row["split"] for row in csv.DictReader(f)}
        assert {f"curves_{s}.png" for s in splits} <= {Path(p).name for p in printed}
        assert sorted(Path(p).name for p in printed) == sorted(p.name for p in real.iterdir())
        assert all(Path(p).parent == link and (real / Path(p).name).stat().st_size for p in printed)


# ------------------------------------------------------------------- lwlc plot's damaged CSVs
def rewrite_without(path: Path, *dropped: str) -> None:
    """``path`` rewritten by the csv module without the columns ``dropped``."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c not in dropped]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def not_utf8(path: Path) -> None:
    """A Latin-1 byte in the first group name (as a spreadsheet saving in Latin-1 leaves)."""
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b",all,", b",all\xe9,", 1)
    assert b"\xe9" in lines[1]
    path.write_bytes(b"\n".join(lines))


def cut_last_row(path: Path) -> None:
    """The file cut off after the third field of its last row (a copy that stopped early)."""
    text = path.read_text()
    head, _, last = text.rstrip("\n").rpartition("\n")
    path.write_text(head + "\n" + ",".join(last.split(",")[:3]))


def data_rows(path: Path) -> int:
    with path.open(newline="") as f:
        return len(list(csv.DictReader(f)))


# case: (damage to the copied results folder, what the line must say with {results})
BAD_CSVS: dict[str, tuple[Callable[[Path], None], str]] = {
    "curves-without-alpha-and-loss": (
        lambda r: rewrite_without(r / "curves.csv", "alpha", "loss"),
        "{results}/curves.csv lacks the column(s) alpha, loss: give the curves.csv and "
        "barriers.csv that lwlc analyze or the barrier Callback wrote",
    ),
    "barriers-without-reference": (
        lambda r: rewrite_without(r / "barriers.csv", "reference"),
        "{results}/barriers.csv lacks the column(s) reference",
    ),
    "callback-barriers-without-epoch": (
        lambda r: rewrite_without(r / "barriers.csv", "epoch"),
        "{results}/barriers.csv lacks the column(s) epoch",
    ),
    "foreign-curves": (
        lambda r: (r / "curves.csv").write_text("name,score\nx,1\n"),
        "{results}/curves.csv lacks the column(s) plan, group, rest_from, split, alpha, loss, "
        "accuracy",
    ),
    "barriers-not-utf8": (
        lambda r: not_utf8(r / "barriers.csv"),
        "{results}/barriers.csv is not UTF-8 text (it holds the byte 0xe9)",
    ),
    "curves-empty": (
        lambda r: (r / "curves.csv").write_bytes(b""),
        "{results}/curves.csv holds no results yet: nothing to draw",
    ),
    "curves-header-only": (
        lambda r: (r / "curves.csv").write_text(
            (r / "curves.csv").read_text().splitlines()[0] + "\n"
        ),
        "{results}/curves.csv holds no results yet: nothing to draw",
    ),
    "curves-last-row-cut": (
        lambda r: cut_last_row(r / "curves.csv"),
        "{results}/curves.csv row {rows} has another number of fields than the header",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_plot_refuses_csvs_it_cannot_draw_in_one_line_writing_nothing(
    case: str, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "barriers"
    shutil.copytree(run_dir / "barriers", results)
    damage, said = BAD_CSVS[case]
    damage(results)
    before = tree(results)
    line = refused(capsys, ["plot", str(results)])
    assert said.format(results=results, rows=data_rows(results / "curves.csv")) in line, line
    assert tree(results) == before


def test_plot_names_the_references_present_before_drawing_anything(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "barriers"
    shutil.copytree(run_dir / "barriers", results)
    with (results / "barriers.csv").open(newline="") as f:
        present = list(dict.fromkeys(row["reference"] for row in csv.DictReader(f)))
    before = tree(results)
    line = refused(capsys, ["plot", str(results), "--reference", "bogus"])
    assert f"no barriers with --reference bogus in {results}/barriers.csv" in line
    assert line.endswith(f"choose {' or '.join(present)}")
    assert tree(results) == before
