"""Write experiments/REPRODUCTION.md from the experiments' runs, so it cannot drift from them.

``lwlc experiment --report`` (or ``python experiments/report.py``) does two steps:

1. collect: for every recipe and reported scale whose run folder
   (``runs/experiments/NAME-SCALE/``) holds a ``result.json``, copy that record, the run's
   barrier CSVs, measurement summaries, pair configs and figures into the repository, all in
   one generated tree ``experiments/results/NAME/SCALE/`` (figures in its ``figures/``), apart
   from the recipe folders, which their authors maintain;
2. render: write REPRODUCTION.md from those copies alone (``--no-collect`` renders only).

Every number in the markdown is read from the copied files; only the verdicts' words are
written here, one function per experiment, and they choose their words from the numbers. Each
result says its pairing, the reference its verdict rests on, the machine, the versions, the
commit it ran at and whether the recipe has changed since (then it is marked stale).
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import statistics
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lwlc import verdicts
from lwlc.formats.io import read_csv

SCALES = ("quick", "fmnist", "fmnist_resnet")
SCALE_WORDS = {
    "quick": "quick (scikit-learn's 8x8 digits and other embedded data, minutes on a CPU)",
    "fmnist": "fmnist (the real Fashion-MNIST at full size: 60000 training, 10000 test images)",
    "fmnist_resnet": "fmnist_resnet (the paper's no-norm ResNet-18 at width 8 on the real "
    "Fashion-MNIST: 60000 training, 10000 test images; three pairings, several seeds)",
}
PAIRING_WORDS = {
    "shared_init": "shared init (the paper's pairing: one initialisation, different data order)",
    "independent": "independent (different initialisation and data order)",
    "half_data": "half data (the authors' Figure 1 pairing: one initialisation, each member on its "
    "own disjoint half of the training data)",
}
REFERENCE_WORDS = (
    "**Barrier references** (every loss barrier in nats of test cross-entropy, error barriers "
    "in percentage points): *midpoint* is the paper's heatmap value "
    "`f(theta(0.5)) - (f(A) + f(B)) / 2`; *models* the largest excess over the line between "
    "the two whole models A and B (for a single layer this includes the end where one layer "
    "is swapped into the other model); *path* the largest excess over the line between the "
    "path's own ends."
)
# What a run's record is made of, besides result.json and the figures: the barrier CSVs, the
# measurement summaries and each pair's resolved training config.
COPIED = (
    "**/barriers.csv",
    "**/summary.json",
    "**/logs/version_0/config.yaml",
    "**/*.selection.json",
    "**/*.selection.csv",
)
Record = dict[str, Any]
Rows = list[dict[str, object]]


# ------------------------------------------------------------------------------ collect


def collect(runs: Path, experiments: Path, names: Sequence[str]) -> list[str]:
    """Copy each run's record, barrier CSVs and figures into ``experiments``; the runs copied."""
    copied = []
    for name in names:
        for scale in SCALES:
            run = runs / f"{name}-{scale}"
            if not (run / "result.json").is_file():
                continue
            results = results_dir(experiments, name, scale)
            previous = results / "result.json"
            before = json.loads(previous.read_text()) if previous.is_file() else None
            if results.exists():
                shutil.rmtree(results)
            results.mkdir(parents=True)
            shutil.copyfile(run / "result.json", results / "result.json")
            for pattern in COPIED:
                for file in run.glob(pattern):
                    target = results / file.relative_to(run)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(file, target)
            figures = results / "figures"
            figures.mkdir()
            for png in sorted((run / "figures").glob("*.png")):
                shutil.copyfile(png, figures / png.name)
            found = drift(before, json.loads((run / "result.json").read_text()))
            if found:
                (results / DRIFT_FILE).write_text(json.dumps(found, indent=1) + "\n")
            copied.append(f"{name}-{scale}")
    return copied


DRIFT_FILE = "drift.json"
# What makes two runs' machines "the same" for a rerun's numbers.
MACHINE_KEYS = ("cpu_model", "processor", "platform", "gpu", "torch", "python")


def drift(before: Record | None, after: Record) -> Record | None:
    """How a rerun's headline numbers differ from the copy it replaces (None: no earlier copy,
    or every shared number equal): each changed key's old and new value, and whether the
    machine and versions were the same (then the change is a failure to reproduce, else a
    drift across machines)."""
    if before is None:
        return None
    numbers = {
        k: (before[k], v)
        for k, v in after.items()
        if isinstance(v, float) and isinstance(before.get(k), float)
    }
    changed = {
        k: [a, b]
        for k, (a, b) in numbers.items()
        if not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    }
    if not changed:
        return None
    m_a, m_b = before["run"].get("machine", {}), after["run"].get("machine", {})
    return {
        "compared": len(numbers),
        "changed": changed,
        # a key either record lacks (older runs have no cpu_model) cannot show the same machine
        "same_machine": all(k in m_a and m_a.get(k) == m_b.get(k) for k in MACHINE_KEYS),
        "previous_machine": {k: m_a.get(k) for k in MACHINE_KEYS},
        "previous_commit": before["run"].get("commit"),
    }


def drift_line(result: Result) -> str:
    """The rerun's drift from the copy it replaced, in words ("" when there was none)."""
    path = result.folder / DRIFT_FILE
    if not path.is_file():
        return ""
    d = json.loads(path.read_text())
    key, (old, new) = max(d["changed"].items(), key=lambda kv: abs(kv[1][1] - kv[1][0]))
    m = d["previous_machine"]
    count = f"{len(d['changed'])} of {d['compared']} headline numbers differ from the run this one"
    largest = f"largest change: `{key}` {old:.4g} -> {new:.4g}"
    if d["same_machine"]:
        return (
            f"**Not reproducible on the same machine**: {count} replaced (same CPU model, "
            f"platform, GPU, Python and torch; commit {str(d['previous_commit'])[:7]}); {largest}."
        )
    return (
        f"**Drift across machines** (not a result): {count} replaced, which ran on "
        f"{m.get('cpu_model') or m['processor'] + ' (CPU model not recorded)'} "
        f"({m['platform']}), {m['gpu'] or 'no GPU'}, torch {m['torch']}, "
        f"Python {m['python']} (commit {str(d['previous_commit'])[:7]}); {largest}."
    )


def results_dir(experiments: Path, name: str, scale: str) -> Path:
    """Where the copy of a run lives: ``experiments/results/NAME/SCALE/``."""
    return experiments / "results" / name / scale


# ------------------------------------------------------------------------------- format


def nats(value: object) -> str:
    """A loss barrier with 3 decimals; numerical noise (|x| < 5e-4) prints as 0.000."""
    x = float(value)  # type: ignore[arg-type]
    if math.isnan(x):
        return "nan"
    return "0.000" if abs(x) < 5e-4 else f"{x:.3f}"


def pp(value: object) -> str:
    """An error barrier (a fraction) in percentage points, 1 decimal."""
    x = 100 * float(value)  # type: ignore[arg-type]
    return "0.0" if abs(x) < 0.05 else f"{x:.1f}"


def pct(value: object) -> str:
    """An accuracy as a percentage."""
    return f"{100 * float(value):.1f}%"  # type: ignore[arg-type]


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def image(path: str, alt: str) -> str:
    return f"![{alt}]({path})"


def spread(values: Sequence[object], fmt: Callable[[object], str] = nats) -> str:
    """One value as ``fmt`` prints it; several (one per seed) as mean ± standard deviation."""
    xs = [float(v) for v in values]  # type: ignore[arg-type]
    if len(xs) == 1:
        return fmt(xs[0])
    return f"{fmt(statistics.fmean(xs))} ± {fmt(statistics.stdev(xs))}"


def distinct(values: Sequence[object]) -> str:
    """The different values of the seeds, in order, joined (one when they all agree)."""
    return " / ".join(dict.fromkeys(str(v) for v in values))


def bold(word: str) -> str:
    """A verdict word as REPRODUCTION.md shows it."""
    return f"**{word}**"


# ------------------------------------------------------------------------------- records


class Result:
    """One copied run: its record, its CSVs and where its figures are (relative to the md)."""

    def __init__(self, experiments: Path, name: str, scale: str) -> None:
        self.name, self.scale = name, scale
        self.folder = results_dir(experiments, name, scale)
        self.record: Record = json.loads((self.folder / "result.json").read_text())
        self.figures = self.folder / "figures"
        self.experiments = experiments

    def __getitem__(self, key: str) -> Any:
        return self.record[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.record.get(key, default)

    @property
    def run(self) -> Record:
        return self.record["run"]

    def csv(self, relative: str) -> Rows:
        return read_csv(self.folder / relative)

    def seed_prefixes(self, network: str, pairing: str) -> list[str]:
        """The record's key prefix of each seed of a pair: ``net/pairing/seed<s>/`` when the
        pair was run with seeds (its ``seeds`` key lists them), else ``net/pairing/``."""
        base = f"{network}/{pairing}/"
        seeds = self.record.get(base + "seeds")
        if seeds is None:
            return [base]
        return [f"{base}seed{s}/" for s in str(seeds).split(",")]

    def values(self, network: str, pairing: str, key: str) -> list[Any]:
        """``key`` of every seed of a pair, in seed order."""
        return [self.record[prefix + key] for prefix in self.seed_prefixes(network, pairing)]

    def stem(self, network: str, pairing: str) -> str:
        """The figures' name stem of a pair: ``net_pairing``, or its first seed's."""
        first = self.seed_prefixes(network, pairing)[0]
        return first.rstrip("/").replace("/", "_")

    def pair_folders(self, network: str, pairing: str) -> list[Path]:
        """The copied folder of every seed of a pair (the key prefixes are the folders)."""
        return [self.folder / p.rstrip("/") for p in self.seed_prefixes(network, pairing)]

    def pairs(self) -> list[tuple[str, str]]:
        """(network, pairing) of every pair in the record, in the record's order."""
        seen = []
        for key in self.record:
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == "pairing" and (parts[0], parts[1]) not in seen:
                seen.append((parts[0], parts[1]))
        return seen

    def figure(self, file: str) -> str | None:
        """The figure's path relative to REPRODUCTION.md, or None when the run drew none."""
        path = self.figures / file
        return str(path.relative_to(self.experiments)) if path.is_file() else None

    def figure_lines(self, files: Sequence[tuple[str, str]]) -> list[str]:
        lines = [image(p, alt) for file, alt in files if (p := self.figure(file))]
        return lines + [""] if lines else []


def training_line(result: Result) -> str:
    """How the first pair was trained and on how many test images it was measured."""
    pairs = result.pairs()
    if not pairs:
        return ""
    folder = result.pair_folders(*pairs[0])[0]
    config_file = folder / "logs" / "version_0" / "config.yaml"
    if not config_file.is_file():
        return ""
    config = yaml.safe_load(config_file.read_text())
    net = config["model"]["init_args"]["model"]
    shape = net["init_args"]
    optimizer = config["optimizer"]["init_args"]
    schedule = config.get("lr_scheduler") or {}
    data = config["data"]
    if "depth" in shape:  # an MLP
        network = (
            f"{shape.get('in_features')} -> {shape.get('depth')} x {shape.get('width')} -> "
            f"{shape.get('num_classes')}"
        )
    else:
        network = "(" + ", ".join(f"{k}: {v}" for k, v in shape.items()) + ")"
    words = (
        f"Training (each pair's `config.yaml`): {net['class_path'].rsplit('.', 1)[-1]} "
        f"{network}, {data['class_path'].rsplit('.', 1)[-1]} "
        f"(held out for validation: {data['init_args'].get('val_size')}), batch "
        f"{data['init_args']['batch_size']}, epochs {config['trainer']['max_epochs']}, "
        f"{config['optimizer']['class_path'].rsplit('.', 1)[-1]} lr {optimizer['lr']} momentum "
        f"{optimizer.get('momentum')} weight decay {optimizer.get('weight_decay')}"
    )
    if schedule:
        steps = schedule["init_args"].get("warmup_steps")
        warmup = f" ({steps} warm-up steps)" if steps else ""
        words += f", {schedule['class_path'].rsplit('.', 1)[-1]}{warmup}"
    words += f", precision {config['trainer'].get('precision') or '32-true (default)'}"
    summaries = [folder / "analysis" / "summary.json", folder / "barriers" / "summary.json"]
    samples = [json.loads(f.read_text()).get("samples") for f in summaries if f.is_file()]
    counts = next((s for s in samples if s), None)
    if counts:
        words += "; measured on " + ", ".join(f"{n} {split}" for split, n in counts.items())
        words += " images"
    return words + "."


def freshness(result: Result, repo: Path) -> str:
    """Whether the run was made by the recipe at HEAD: the commit and any change since."""
    run = result.run
    commit = run.get("commit")
    if not commit:
        return "commit not recorded"
    words = f"commit {commit[:7]}"
    if run.get("recipe_modified"):
        words += ", recipe folder modified (uncommitted) during the run"
    folder = f"experiments/{result.name}"
    try:
        recipe = [f"{folder}/recipe.py", f"{folder}/*.yaml"]
        changed = subprocess.run(
            ["git", "diff", "--quiet", commit, "HEAD", "--", *recipe], cwd=repo, capture_output=True
        ).returncode
    except OSError:
        return words
    if changed == 1:
        return f"**stale**: {words}; the recipe changed since (rerun it)"
    if changed != 0:
        return words
    source = subprocess.run(
        ["git", "diff", "--name-only", commit, "HEAD", "--", "src/lwlc"],
        cwd=repo,
        capture_output=True,
        text=True,
    ).stdout.split()
    files = "1 file" if len(source) == 1 else f"{len(source)} files"
    since = f"; {files} of src/lwlc changed since" if source else ""
    return f"{words}, recipe unchanged at HEAD{since}"


def machine_line(result: Result, repo: Path) -> str:
    run = result.run
    m = run["machine"]
    gpu = m.get("gpu") or "no GPU"
    load = f", load average {m['load_average_1min']}" if "load_average_1min" in m else ""
    lwlc = f", lwlc {m['lwlc']}" if "lwlc" in m else ""
    return (
        f"Machine and time: {m.get('cpu_model') or m['processor']}, {m['cpu_cores']} cores "
        "(torch threads: "
        f"{m['torch_threads']}{load}), {gpu}; Python {m['python']}, torch {m['torch']}{lwlc}; "
        f"{run['wall_time_s']} s; {freshness(result, repo)}."
    )


# ----------------------------------------------------------------- 1. full vs single


def full_vs_single(result: Result) -> tuple[list[str], str]:
    lines = []
    summary = []
    rows = []
    for network, pairing in result.pairs():
        v = functools.partial(result.values, network, pairing)
        rows.append(
            [
                f"{network}, {pairing}",
                len(v("acc_a")),
                f"{spread(v('acc_a'), pct)} / {spread(v('acc_b'), pct)}",
                " / ".join(spread(v(f"{r}/full_loss_barrier")) for r in REFS),
                " / ".join(spread(v(f"{r}/max_single_loss_barrier")) for r in REFS),
                distinct(v("midpoint/max_single_layer")),
                f"{spread(v('midpoint/full_error_barrier'), pp)} / "
                f"{spread(v('midpoint/max_single_error_barrier'), pp)}",
            ]
        )
    lines += table(
        [
            "pair",
            "seeds",
            "test acc A / B",
            "full barrier (midpoint / models / path)",
            "max single-layer barrier (midpoint / models / path)",
            "its layer (midpoint)",
            "full / max single error (pp, midpoint)",
        ],
        rows,
    )
    lines += seed_table(result, "analysis")
    for network, pairing in result.pairs():
        per_layer = [
            single_layers(read_csv(f / "analysis" / "barriers.csv"))
            for f in result.pair_folders(network, pairing)
        ]
        lines.append(f"Every single layer, {network} {pairing} (loss barriers, nats{SEEDS}):")
        lines.append("")
        lines += table(
            ["layer", "rest from", "midpoint", "models", "path"],
            [
                [g, rest, *(spread([seed[(g, rest)][r] for seed in per_layer]) for r in REFS)]
                for g, rest in per_layer[0]
            ],
        )
        outside = [
            f"{g} (rest {rest})"
            for g, rest in per_layer[0]
            if statistics.fmean(seed[(g, rest)]["midpoint"] for seed in per_layer)
            > verdicts.SINGLE_BAND
        ]
        lines.append(
            f"Outside the paper's {verdicts.SINGLE_BAND}-nat band (midpoint, mean over the seeds): "
            f"{', '.join(outside) or 'none'}."
        )
        lines.append("")
        lines += result.figure_lines(
            [
                (
                    f"{result.stem(network, pairing)}_barriers.png",
                    f"{pairing}: per-layer midpoint barriers",
                ),
                (f"{result.stem(network, pairing)}_curves.png", f"{pairing}: interpolation curves"),
            ]
        )
        summary.append(verdict_full_vs_single(result, network, pairing))
    return lines, "; ".join(summary)


REFS = ("midpoint", "models", "path")
SEEDS = "; over several seeds: mean ± standard deviation"


def single_layers(barriers: Rows) -> dict[tuple[str, str], dict[str, float]]:
    """(layer, rest_from) -> {reference: loss barrier} of the single-layer paths."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for row in barriers:
        if row["plan"] == "single":
            key = (str(row["group"]), str(row["rest_from"]))
            out.setdefault(key, {})[str(row["reference"])] = float(row["loss_barrier"])  # type: ignore[arg-type]
    return out


def over_band(barriers: Rows) -> str:
    """How many single-layer paths (layer x rest) exceed the paper's band, midpoint reference."""
    paths = [v["midpoint"] for v in single_layers(barriers).values() if "midpoint" in v]
    return f"{sum(x > verdicts.SINGLE_BAND for x in paths)} of {len(paths)}"


def seed_table(result: Result, folder: str) -> list[str]:
    """Each seed's full and largest single-layer midpoint barrier (pairs run with seeds only):
    at the end of training, from ``lwlc analyze`` (``analysis``) or the Callback's last epoch."""
    key = "midpoint/" if folder == "analysis" else "last/"
    rows = []
    for network, pairing in result.pairs():
        prefixes = result.seed_prefixes(network, pairing)
        if len(prefixes) < 2:
            continue
        for prefix, path in zip(prefixes, result.pair_folders(network, pairing), strict=True):
            csv_rows = [r for r in read_csv(path / folder / "barriers.csv") if r["split"] == "test"]
            if folder != "analysis":
                end = max(float(r["epoch"]) for r in csv_rows)  # type: ignore[arg-type]
                csv_rows = [r for r in csv_rows if float(r["epoch"]) == end]  # type: ignore[arg-type]
            rows.append(
                [
                    f"{network}, {pairing}",
                    prefix.rstrip("/").rsplit("/", 1)[-1],
                    nats(result[f"{prefix}{key}full_loss_barrier"]),
                    nats(result[f"{prefix}{key}max_single_loss_barrier"]),
                    over_band(csv_rows),
                ]
            )
    if not rows:
        return []
    header = ["pair", "seed", "full", "max single layer"]
    header.append(f"single-layer paths over {verdicts.SINGLE_BAND} nats")
    return [
        "Each seed (midpoint loss barriers, nats, test split, at the end of training):",
        "",
        *table(header, rows),
    ]


def seeded_verdict(words: Sequence[str]) -> str:
    """The seeds' common word in bold and how many seeds gave it."""
    word, count = verdicts.agree(words)
    return f"{bold(word)} ({verdicts.seeds_phrase(count, len(words))}"


def verdict_full_vs_single(result: Result, network: str, pairing: str) -> str:
    """The rule of ``verdicts.single_layer`` per seed on the midpoint reference."""
    v = functools.partial(result.values, network, pairing)
    fulls = [float(x) for x in v("midpoint/full_loss_barrier")]
    singles = [float(x) for x in v("midpoint/max_single_loss_barrier")]
    words = [verdicts.single_layer(f, s) for f, s in zip(fulls, singles, strict=True)]
    head = f"{seeded_verdict(words)}; {network}, {pairing}, midpoint reference)"
    return (
        f"{head}: full {spread(fulls)} nats vs at most {spread(singles)} for a single layer "
        f"(paper's band {verdicts.SINGLE_BAND}; against the whole models, models reference: up "
        f"to {spread(v('models/max_single_loss_barrier'))})"
    )


# ---------------------------------------------------------------- 2. through training


def through_training(result: Result) -> tuple[list[str], str]:
    lines = []
    summary = []
    rows = []
    for network, pairing in result.pairs():
        v = functools.partial(result.values, network, pairing)
        rows.append(
            [
                f"{network}, {pairing}",
                len(v("epochs")),
                v("epochs")[0].split(",")[-1],
                " / ".join(spread(v(f"{ref_key(r)}full_loss_barrier")) for r in REFS),
                f"{spread(v('peak_full_loss_barrier'))} "
                f"({distinct([str(int(float(e))) for e in v('peak_full_epoch')])})",
                " / ".join(spread(v(f"{ref_key(r)}max_single_loss_barrier")) for r in REFS),
                spread(v("max_single_loss_barrier_any_epoch")),
            ]
        )
    lines += table(
        [
            "pair",
            "seeds",
            "last epoch",
            "full barrier at the last epoch (midpoint / models / path)",
            "full midpoint peak (epoch)",
            "max single-layer barrier at the last epoch (midpoint / models / path)",
            "max single-layer midpoint barrier, any epoch",
        ],
        rows,
    )
    lines += seed_table(result, "barriers")
    for network, pairing in result.pairs():
        seeds = [
            read_csv(f / "barriers" / "barriers.csv") for f in result.pair_folders(network, pairing)
        ]
        lines.append(f"By epoch, {network} {pairing} (loss barriers, nats, test split{SEEDS}):")
        lines.append("")
        lines += table(
            [
                "epoch",
                "full (midpoint)",
                "max single (midpoint)",
                "max single (models)",
                f"single-layer paths over {verdicts.SINGLE_BAND} (midpoint)",
            ],
            by_epoch(seeds),
        )
        lines += result.figure_lines(
            [
                (
                    f"{result.stem(network, pairing)}_heatmap_{split}_single{rest}_loss.png",
                    f"{pairing}: layers x epochs, midpoint, {split}, rest from {words}",
                )
                for split in ("test", "train")
                for rest, words in (("", "A"), ("_rest_b", "B"))
            ]
        )
        summary.append(verdict_through_training(result, network, pairing))
    return lines, "; ".join(summary)


def ref_key(reference: str) -> str:
    """The record's key prefix of a reference's last-epoch values (midpoint: ``last/``)."""
    return "last/" if reference == "midpoint" else f"{reference}/last/"


def losses(rows: Rows, plan: str, reference: str) -> list[float]:
    """The loss barriers of ``plan``'s paths against ``reference``."""
    return [
        float(r["loss_barrier"])  # type: ignore[arg-type]
        for r in rows
        if r["plan"] == plan and r["reference"] == reference
    ]


def by_epoch(seeds: Sequence[Rows]) -> list[list[object]]:
    """Per epoch on the test split, over the seeds: the full midpoint barrier, the largest
    single-layer midpoint and models barriers, and the single-layer paths over the band."""
    tests = [[r for r in rows if r["split"] == "test"] for rows in seeds]
    out: list[list[object]] = []
    for epoch in sorted({float(r["epoch"]) for r in tests[0]}):  # type: ignore[arg-type]
        at = [[r for r in rows if float(r["epoch"]) == epoch] for rows in tests]  # type: ignore[arg-type]
        out.append(
            [
                int(epoch),
                spread([losses(rows, "full", "midpoint")[0] for rows in at]),
                spread([max(losses(rows, "single", "midpoint")) for rows in at]),
                spread([max(losses(rows, "single", "models")) for rows in at]),
                ", ".join(over_band(rows) for rows in at),
            ]
        )
    return out


def verdict_through_training(result: Result, network: str, pairing: str) -> str:
    """The rule of ``verdicts.through_training`` per seed on the midpoint reference."""
    v = functools.partial(result.values, network, pairing)
    peaks = [float(x) for x in v("peak_full_loss_barrier")]
    singles = [float(x) for x in v("max_single_loss_barrier_any_epoch")]
    words = [verdicts.through_training(p, s) for p, s in zip(peaks, singles, strict=True)]
    epochs = distinct([str(int(float(e))) for e in v("peak_full_epoch")])
    return (
        f"{seeded_verdict(words)}; {network}, {pairing}, midpoint reference): the full barrier "
        f"peaks at {spread(peaks)} nats (epoch {epochs}); single layers reach at most "
        f"{spread(singles)} (paper's band {verdicts.SINGLE_BAND})"
    )


# ----------------------------------------------------------------------- 3. cumulative

ORDERS = ("front", "back", "random", "outer_first")


def cumulative(result: Result) -> tuple[list[str], str]:
    lines = []
    summary = []
    rows = []
    for network, pairing in result.pairs():
        v = functools.partial(result.values, network, pairing)
        for order in ORDERS:
            profiles = [s.split(",") for s in v(f"{order}/loss_barriers")]
            rows.append(
                [
                    f"{network}, {pairing}",
                    order.replace("_", " "),
                    distinct(v(f"{order}/order")).replace(",", ", "),
                    ", ".join(spread(list(k)) for k in zip(*profiles, strict=True)),
                    distinct(v(f"{order}/onset_layer")),
                ]
            )
    lines.append(
        "Midpoint loss barriers (nats) at the last epoch after averaging the first k layers"
        f"{SEEDS}:"
    )
    lines.append("")
    lines += table(
        ["pair", "order", "layers added", "barrier for k = 1..n (midpoint)", "onset"], rows
    )
    lines += cumulative_full_rows(result)
    for network, pairing in result.pairs():
        lines += result.figure_lines(
            [
                (
                    f"{result.stem(network, pairing)}_orders.png",
                    f"{pairing}: barrier after the first k layers",
                ),
                (
                    f"{result.stem(network, pairing)}_heatmap_test_cumulative_front_loss.png",
                    f"{pairing}: from the front through training",
                ),
                (
                    f"{result.stem(network, pairing)}_heatmap_test_cumulative_back_loss.png",
                    f"{pairing}: from the back through training",
                ),
            ]
        )
        summary.append(verdict_cumulative(result, network, pairing))
    return lines, "; ".join(summary)


def cumulative_full_rows(result: Result) -> list[str]:
    """Each pair's accuracies and full barrier (every reference), over its seeds."""
    full_rows = []
    for n, pg in result.pairs():
        v = functools.partial(result.values, n, pg)
        full_rows.append(
            [
                f"{n}, {pg}",
                len(v("acc_a")),
                f"{spread(v('acc_a'), pct)} / {spread(v('acc_b'), pct)}",
                " / ".join(
                    spread(v(f"{'' if r == 'midpoint' else r + '/'}full_loss_barrier"))
                    for r in REFS
                ),
            ]
        )
    return table(
        ["pair", "seeds", "test acc A / B", "full barrier (midpoint / models / path)"], full_rows
    )


def verdict_cumulative(result: Result, network: str, pairing: str) -> str:
    """The rule of ``verdicts.cumulative`` per seed on the midpoint reference."""
    words, details = [], []
    for prefix in result.seed_prefixes(network, pairing):
        full = float(result[prefix + "full_loss_barrier"])
        sides = {}
        for side in ("front", "back"):
            first_layer = result[f"{prefix}{side}/order"].split(",")[0]
            first_value = float(result[f"{prefix}{side}/loss_barriers"].split(",")[0])
            sides[side] = (first_layer, first_value, result[f"{prefix}{side}/onset_layer"])
        words.append(
            verdicts.cumulative(full, [(v, onset == layer) for layer, v, onset in sides.values()])
        )
        details.append(
            f"full {nats(full)} nats, "
            + "; ".join(
                f"from the {side} {layer} alone gives {nats(v)} "
                f"({100 * v / full if full else math.nan:.0f}% of the full), half the full is "
                f"passed at {onset}"
                for side, (layer, v, onset) in sides.items()
            )
        )
    where = f"{network}, {pairing}, midpoint reference"
    return f"{seeded_verdict(words)}; {where}): " + " | ".join(details)


# ----------------------------------------------------------------------- 4-8, headlines


def headline_rows(result: Result, keys: Sequence[tuple[str, str]]) -> list[str]:
    """A table of (label, record key) headline values, formatted by their kind."""
    rows = []
    for label, key in keys:
        if key in result.record:
            v = result[key]
            rows.append([label, f"{v:.4g}" if isinstance(v, float) else v])
    return table(["quantity", "value"], rows)


def deep_linear(result: Result) -> tuple[list[str], str]:
    lines = []
    said = []
    for pair in ("sign_symmetry", "independent"):
        p = f"{pair}/"
        lines.append(f"{pair.replace('_', ' ')}: {result[p + 'pair']}")
        lines.append("")
        lines += headline_rows(
            result,
            [
                ("loss A", p + "loss_a"),
                ("loss B", p + "loss_b"),
                ("full path barrier", p + "full_path_barrier"),
                ("full curve's smallest second difference", p + "full_min_second_difference"),
                ("max single-layer path barrier", p + "max_single_path_barrier"),
                ("single-layer smallest second difference", p + "single_min_second_difference"),
                ("single-layer curves convex", p + "single_curves_convex"),
            ],
        )
        convex = result[p + "single_curves_convex"] == "yes"
        barrier = float(result[p + "full_path_barrier"])
        said.append(
            f"{bold(verdicts.deep_linear(convex, barrier))} ({pair.replace('_', ' ')}, path "
            "reference):"
            f" single-layer curves convex: {result[p + 'single_curves_convex']}, full path "
            f"barrier {barrier:.3f}"
        )
        lines += result.figure_lines([(f"{pair}_curves.png", f"{pair}: interpolation curves")])
    return lines, "; ".join(said)


def robustness(result: Result) -> tuple[list[str], str]:
    ends = [k.split("/") for k in result.record if k.endswith("/averaging_loss_increase")]
    layers = [parts[-2] for parts in ends]
    # keys are prefixed by the network when a scale has several
    base = "".join(part + "/" for part in ends[0][:-2]) if ends else ""
    rows = []
    for layer in layers:
        key = f"{base}{layer}/"
        rows.append(
            [
                layer,
                f"{float(result[key + 'averaging_loss_increase']):.4f}",
                f"{float(result[key + 'random_loss_increase']):.4f}",
                f"{float(result.get(f'{base}noise/{layer}_loss_increase', math.nan)):.3f}",
            ]
        )
    whole = result.get(f"{base}noise/whole_model_loss_increase")
    if whole is not None:
        rows.append(["whole model (isotropic)", "", "", f"{float(whole):.3f}"])
    lines = table(
        [
            "layer",
            "loss increase, averaging direction",
            "loss increase, random direction (mean)",
            f"loss increase, noise of norm {float(result.get(base + 'noise_norm', math.nan)):.3g}",
        ],
        rows,
    )
    lines += result.figure_lines(
        [(p.name, p.stem.replace("_", " ")) for p in sorted(result.figures.glob("*.png"))]
    )
    count = str(result.get(base + "layers_averaging_hurts_more_than_random", "?/?"))
    worse, total = count.split("/")
    word = bold(verdicts.robustness(int(worse), int(total)))
    pairing = result.get(base + "pairing", "")
    return lines, (
        f"{word} ({pairing}; rest from A, loss at the end of the move): averaging hurts more "
        f"than random in {count} layers"
    )


def subspace(result: Result) -> tuple[list[str], str]:
    keys = [
        ("pairing", "pairing"),
        ("averaging direction shown", "averaging_direction"),
        ("clean test loss", "clean_loss"),
        ("clean test accuracy", "clean_accuracy"),
        ("training subspace dimension", "training_subspace_dim"),
        ("mean loss, noise in the training subspace", "mean_loss_training_subspace"),
        ("mean loss, noise in the orthogonal complement", "mean_loss_null_space"),
        ("mean loss, averaging direction (away)", "mean_loss_averaging_direction_away"),
        ("mean loss, averaging direction (towards)", "mean_loss_averaging_direction_towards"),
        ("increase ratio, subspace / complement", "subspace_over_null_loss_increase"),
    ]
    lines = headline_rows(result, keys)
    layers = sorted({k.split("/")[0] for k in result.record if k.endswith("/mean_loss_null_space")})
    spaces = [
        ("training subspace", "mean_loss_training_subspace"),
        ("orthogonal complement", "mean_loss_null_space"),
        ("averaging direction, away", "mean_loss_averaging_direction_away"),
        ("averaging direction, towards", "mean_loss_averaging_direction_towards"),
    ]
    if layers:
        lines.append("Mean test loss with noise within one layer (nats):")
        lines.append("")
        lines += table(
            ["layer", *(label for label, _ in spaces)],
            [
                [
                    layer,
                    *(f"{float(result.get(f'{layer}/{key}', math.nan)):.3f}" for _, key in spaces),
                ]
                for layer in layers
            ],
        )
    lines += result.figure_lines(
        [(p.name, p.stem.replace("_", " ")) for p in sorted(result.figures.glob("*.png"))]
    )
    ratio = float(result.get("subspace_over_null_loss_increase", math.nan))
    word = bold(verdicts.subspace(ratio))
    return lines, (
        f"{word} (two nets from one initialisation, whole model): noise in the training "
        f"subspace raises the loss {ratio:.1f} times more than in its complement"
    )


def federated(result: Result) -> tuple[list[str], str]:
    splits = [k.split("/")[0] for k in result.record if k.endswith("/best_partial")]
    schemes: list[str] = []
    for k in result.record:
        parts = k.split("/")
        if len(parts) == 3 and parts[2] == "local_acc" and parts[1] not in schemes:
            schemes.append(parts[1])
    rows = [
        [
            scheme,
            *(
                f"{pct(result[f'{s}/{scheme}/local_acc'])} / {pct(result[f'{s}/{scheme}/acc'])}"
                if f"{s}/{scheme}/local_acc" in result.record
                else ""
                for s in splits
            ),
        ]
        for scheme in schemes
    ]
    rows.append(
        [
            "best partial minus FedAvg, own task",
            *(
                f"{100 * float(result[f'{s}/best_partial_minus_fedavg_local_acc']):+.1f} pp"
                for s in splits
            ),
        ]
    )
    lines = [
        f"{result.get('pairing', '')}; mean client test accuracy after the last round, on the "
        "client's own task / on all classes:",
        "",
        *table(["server averages", *splits], rows),
    ]
    lines += result.figure_lines(
        [(p.name, p.stem.replace("_", " ")) for p in sorted(result.figures.glob("*.png"))]
    )
    gains = {s: float(result[f"{s}/best_partial_minus_fedavg_local_acc"]) for s in splits}
    wins = [s for s, g in gains.items() if g > 0]
    word = bold(verdicts.federated(wins, splits))
    return lines, (
        f"{word} ({result.get('pairing', '')}, accuracy on the clients' own tasks): partial "
        f"averaging beats FedAvg on {', '.join(wins) or 'no split'}"
    )


def language_model(result: Result) -> tuple[list[str], str]:
    keys = [
        ("pairing", "pairing"),
        ("corpus", "corpus"),
        ("held-out characters", "test_tokens"),
        ("loss A (nats/char)", "loss_a"),
        ("loss B", "loss_b"),
        ("accuracy A", "acc_a"),
        ("accuracy B", "acc_b"),
    ]
    for ref in REFS:
        keys += [
            (f"full barrier ({ref})", f"{ref}/full_loss_barrier"),
            (f"max single-layer barrier ({ref})", f"{ref}/max_single_loss_barrier"),
            (f"its layer ({ref})", f"{ref}/max_single_layer"),
        ]
    lines = headline_rows(result, keys)
    lines += result.figure_lines(
        [(p.name, p.stem.replace("_", " ")) for p in sorted(result.figures.glob("*.png"))]
    )
    full = float(result["midpoint/full_loss_barrier"])
    single = float(result["midpoint/max_single_loss_barrier"])
    word = bold(verdicts.single_layer(full, single))
    return lines, (
        f"{word} ({result['pairing']}, midpoint reference): full {nats(full)} nats vs up to "
        f"{nats(single)} for a single layer ({result['midpoint/max_single_layer']})"
    )


# Context that holds whatever the numbers are (so it has none of them).
# ------------------------------------------------------------------------ 9. selection

SELECTION_ALIGNS = ("none", "weight-matching")
VERDICT_BUDGET = "0.05"


def selection_excess(result: Result, prefix: str, split: str = "test") -> float:
    """The chosen model's loss on ``split`` above the member the budget counted from."""
    ref = "member_" + result[prefix + "reference"]
    return float(result[f"{prefix}chosen/{split}/loss"]) - float(
        result[f"{prefix}{ref}/{split}/loss"]
    )


def selection_rows(result: Result, network: str, pairing: str) -> list[list[object]]:
    """One row per alignment and budget: what was chosen and how it did, over the seeds."""
    rows = []
    seeds = result.seed_prefixes(network, pairing)
    for align in SELECTION_ALIGNS:
        for budget in str(result[f"{network}/{pairing}/budgets"]).split(","):
            at = [f"{p}{align}/{budget}/" for p in seeds]
            v = functools.partial(
                lambda at_budget, key: result.values(network, pairing, at_budget + key),
                f"{align}/{budget}/",
            )
            rows.append([
                align, budget, len(at), distinct(v("chosen")), spread(v("fraction"), pct),
                spread([selection_excess(result, p, "val") for p in at]),
                spread([selection_excess(result, p) for p in at]),
                " / ".join(spread(v(f"{m}/test/accuracy"), pct)
                           for m in ("chosen", "member_a", "member_b", "full_average")),
                spread(v("full_average/val/loss")),
            ])  # fmt: skip
    return rows


def verdict_selection(result: Result, network: str, pairing: str) -> str:
    """The rule of ``verdicts.selection`` per seed, unaligned, at the 0.05-nat budget."""
    at = [f"{p}none/{VERDICT_BUDGET}/" for p in result.seed_prefixes(network, pairing)]
    excess = [selection_excess(result, p) for p in at]
    fractions = [float(result[p + "fraction"]) for p in at]
    words = [
        verdicts.selection(
            fraction, above, float(VERDICT_BUDGET),
            float(result[p + "chosen/test/loss"]) - float(result[p + "full_average/test/loss"]),
        )
        for p, fraction, above in zip(at, fractions, excess, strict=True)
    ]  # fmt: skip
    return (
        f"{seeded_verdict(words)}; {network}, {pairing}, unaligned, budget {VERDICT_BUDGET}): "
        f"{spread(fractions, pct)} of the parameters averaged, held-out test loss "
        f"{spread(excess)} nats above the reference member"
    )


def selection(result: Result) -> tuple[list[str], str]:
    lines: list[str] = []
    summary = []
    header = [
        "align", "budget (nats)", "seeds", "chosen groups (each seed's set)", "parameters averaged",
        "val loss above ref", "test loss above ref",
        "test acc chosen / A / B / full average", "full average val loss",
    ]  # fmt: skip
    for network, pairing in result.pairs():
        lines.append(f"{network}, {PAIRING_WORDS.get(pairing, pairing)}{SEEDS}:")
        lines.append("")
        lines += table(header, selection_rows(result, network, pairing))
        stem = result.stem(network, pairing)
        lines += result.figure_lines([
            (f"{stem}_{align}_budget{VERDICT_BUDGET}.png", f"{network} {pairing}, {align}, "
             f"budget {VERDICT_BUDGET}: loss against the share averaged")
            for align in SELECTION_ALIGNS
        ])  # fmt: skip
        summary.append(verdict_selection(result, network, pairing))
    return lines, "; ".join(summary)


NOTES = {
    "full_vs_single": "A shared-init pair whose full barrier is near zero is no test of the "
    "claim: two networks from one initialisation may stay in one linearly connected basin, and "
    "then no single layer can fall short of the full barrier. Against the whole models "
    "(*models*) a single layer's value includes the path's end where that layer alone is "
    "swapped into the other model, which for independently trained networks can be far worse "
    "than either model; the *path* reference, over the path's own ends, does not see that end.",
    "through_training": "Rest from A: each single-layer path starts at A and ends at A with B's "
    "layer; rest from B: at B with A's layer (the authors draw both, on the test and the "
    "training split). The tables are on the test split, single layers with either rest; the "
    "last epoch's values are experiment 1's (same seeds, same schedule).",
    "cumulative": "Front: the first k layers averaged; back: the last k; random: a seeded "
    "random order; outer first: the first m and the last m layers, then the middle (the "
    "paper's order for deep networks, m = 5; fewer here so that a middle remains).",
    "subspace": "Random directions are isotropic within each subspace (Gaussian coordinates in "
    "an orthonormal basis); the authors drew non-negative coordinates in the basis.",
    "federated": "Two accuracies answer different questions: on the client's own task "
    "(per-class accuracy weighted by its label distribution, the authors' per-client test "
    "sets) personal models are favoured; on all classes FedAvg is.",
    "selection": "The budget counts from the member with the lower selection (`val`) loss, and "
    "the rest of the network comes from it (*ref*); `test` is never seen by the choice. With up "
    "to 12 groups every subset is measured (the largest that fits is chosen), beyond that the "
    "greedy search (the ResNet's 21 groups). Each seed's `merged.ckpt.selection.json`/`.csv` are "
    "copied beside `result.json`.",
    "language_model": "The authors' script (`LLMC/get_llm.py`) loads the second model with the "
    "first model's weights (`model2.load_state_dict(st1['model'])`), so its endpoint B there is "
    "A; lwlc evaluates both models.",
}
RULES = {
    "full_vs_single": verdicts.RULES["single_layer"],
    "language_model": verdicts.RULES["single_layer"],
    **{k: v for k, v in verdicts.RULES.items() if k != "single_layer"},
}
SECTIONS: dict[str, tuple[str, Callable[[Result], tuple[list[str], str]]]] = {
    "full_vs_single": ("Full-model vs single-layer barriers", full_vs_single),
    "through_training": ("Barriers through training", through_training),
    "cumulative": ("Cumulative averaging", cumulative),
    "deep_linear": ("Deep linear network", deep_linear),
    "robustness": ("Averaging direction vs random directions and noise", robustness),
    "subspace": ("Subspace noise", subspace),
    "federated": ("Federated and personalised averaging", federated),
    "language_model": ("Language model", language_model),
    "selection": ("Choosing the layers to average", selection),
}


# ------------------------------------------------------------------------------- render


def section(result: Result, number: int, title: str, repo: Path) -> tuple[list[str], str]:
    """One experiment at one scale: claim, command, numbers, figures, machine, verdict."""
    body, verdict = SECTIONS[result.name][1](result)
    flag = f" --{result.scale.replace('_', '-')}"
    if result.run.get("seeds"):  # the run's own seeds and extra fit arguments, as typed
        flag += " --seeds " + ",".join(map(str, result.run["seeds"]))
    flag += "".join(f" --fit={arg}" for arg in result.run.get("fit_overrides") or [])
    lines = [
        f"### {number}. {title} ({result.name}, {result.scale})",
        "",
        f"Claim: {result.run['claim']}",
        "",
        f"Command: `lwlc experiment {result.name}{flag}`",
        "",
        *body,
        *([NOTES[result.name], ""] if result.name in NOTES else []),
        *([line, ""] if (line := training_line(result)) else []),
        machine_line(result, repo),
        "",
        *([line, ""] if (line := drift_line(result)) else []),
        f"Verdict: {verdict}. (Rule: {RULES[result.name]}.)",
        "",
    ]
    return lines, verdict


def scale_note(found: Sequence[Result], repo: Path) -> list[str]:
    """For the fmnist scale: how many epochs of the paper config's the pairs trained, and why."""
    if found[0].scale != "fmnist":
        return []
    base = repo / "configs" / "paper_mnist_mlp.yaml"
    trained = {
        yaml.safe_load(f.read_text())["trainer"]["max_epochs"]
        for r in found
        for f in r.folder.glob("*/*/logs/version_0/config.yaml")
    }
    if not base.is_file() or not trained:
        return []
    paper = yaml.safe_load(base.read_text())["trainer"]["max_epochs"]
    cifar_file = repo / "configs" / "paper_cifar10_resnet18.yaml"
    cifar = yaml.safe_load(cifar_file.read_text())["trainer"]["max_epochs"]
    return [
        f"What was scaled: the pairs trained for {', '.join(map(str, sorted(trained)))} epochs "
        f"of `configs/paper_mnist_mlp.yaml`'s {paper} (the paper's CIFAR-10 ResNet-18: {cifar}) "
        "so that each "
        "experiment fits a shared 2-core CPU in minutes (wall times below); everything else is "
        "the config's (network, optimiser, batch, schedule shape, full training and test sets). "
        "Why and how: `experiments/full_vs_single/fmnist.yaml`.",
        "",
    ]


# The command that would fill a scale no run has reported yet.
NOT_RUN = {
    "quick": "lwlc experiment NAME --quick",
    "fmnist": "lwlc experiment NAME --fmnist",
    "fmnist_resnet": "lwlc experiment NAME --fmnist-resnet, NAME = full_vs_single, "
    "through_training, cumulative: about 7 hours each on 2 CPU cores",
}


def render(experiments: Path, repo: Path) -> str:
    """REPRODUCTION.md from the copied runs under ``experiments``."""
    head = [
        '# Reproducing "Layer-wise Linear Mode Connectivity": what lwlc\'s recipes gave',
        "",
        "Generated by `lwlc experiment --report` (experiments/report.py) from the runs' own",
        "files (`experiments/results/NAME/SCALE/`: `result.json`, the barrier CSVs, the pairs'",
        "configs and the figures, copied from `runs/experiments/NAME-SCALE/`); do not edit by",
        "hand. Each verdict names its pair (shared init or independent) and the barrier",
        "reference it rests on; its words are chosen by the rule printed after it, its numbers",
        "read from the files. A result is marked **stale** when its recipe changed after the",
        "commit it ran at.",
        "",
        REFERENCE_WORDS,
        "",
        "**Pairings**: *shared init* = the paper's default (one initialisation, different data",
        "order), *half data* = the authors' Figure 1 pair (one initialisation, each member on its",
        "own disjoint half of the training data), *independent* = different initialisation too.",
        "**Seeds**: a pair run with several seeds shows mean ± standard deviation over them, each",
        "seed's headline numbers, and a verdict that says how many seeds agree.",
        "",
        "Full (paper-scale, CIFAR-10 on a GPU) variants are not reported here: they were not run.",
        "",
    ]
    summary: list[list[object]] = []
    bodies: list[str] = []
    for scale in SCALES:
        found = [
            Result(experiments, name, scale)
            for name in SECTIONS
            if (results_dir(experiments, name, scale) / "result.json").is_file()
        ]
        if not found:
            head += [f"Not run yet: {SCALE_WORDS[scale]} (`{NOT_RUN.get(scale, '')}`).", ""]
            continue
        bodies += [f"## Scale {SCALE_WORDS[scale]}", "", *scale_note(found, repo)]
        for result in found:
            number = list(SECTIONS).index(result.name) + 1
            title = SECTIONS[result.name][0]
            lines, verdict = section(result, number, title, repo)
            bodies += lines
            summary.append([number, result.name, scale, verdict, f"{result.run['wall_time_s']} s"])
    head += table(["#", "experiment", "scale", "verdict", "wall time"], summary)
    return "\n".join(head + bodies).rstrip() + "\n"


def write(experiments: Path, repo: Path, runs: Path | None) -> Path:
    """Collect the runs (unless ``runs`` is None), then write ``experiments/REPRODUCTION.md``."""
    if runs is not None:
        collect(runs, experiments, list(SECTIONS))
    target = experiments / "REPRODUCTION.md"
    target.write_text(render(experiments, repo))
    return target


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/experiments", help="the run folders")
    parser.add_argument("--no-collect", action="store_true", help="render the copies only")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    print(write(here, here.parent, None if args.no_collect else Path(args.runs)))
