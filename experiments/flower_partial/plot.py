"""Figure and table of experiments/flower_partial/results/accuracy.csv (written by run.py).

python experiments/flower_partial/plot.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lwlc.figures import save_figure  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def summarise_barriers() -> None:
    """barrier_summary.csv: each round's single-layer path barrier per group, averaged over the
    clients (each client against the clients' average), from the large barriers_seed*.csv."""
    frames = []
    for path in sorted(RESULTS.glob("barriers_seed*.csv")):
        b = pd.read_csv(path)
        b = b[(b.plan == "single") & (b.reference == "path")]
        summary = b.groupby(["round", "group"], sort=False).loss_barrier.mean().reset_index()
        frames.append(summary.assign(seed=int(path.stem.removeprefix("barriers_seed"))))
    if frames:
        pd.concat(frames).round(5).to_csv(RESULTS / "barrier_summary.csv", index=False)


def main() -> None:
    summarise_barriers()
    df = pd.read_csv(RESULTS / "accuracy.csv")
    order = list(dict.fromkeys(df.scheme))
    fig, (curve, final) = plt.subplots(1, 2, figsize=(11, 4))
    last = df[df["round"] == df["round"].max()]
    for i, scheme in enumerate(order):
        rows = df[df.scheme == scheme].groupby("round").mean_client_acc
        mean, low, high = rows.mean(), rows.min(), rows.max()
        curve.plot(mean.index, mean.values, marker="o", label=scheme, color=f"C{i}")
        curve.fill_between(mean.index, low.values, high.values, alpha=0.2, color=f"C{i}")
        accs = last[last.scheme == scheme].mean_client_acc
        final.bar(i, accs.mean(), color=f"C{i}", alpha=0.6)
        final.scatter([i] * len(accs), accs, color="black", s=12, zorder=3)
    seeds = df.seed.nunique()
    title = f"20 clients, Dirichlet(0.01) digits; {seeds} seeds (band: range)"
    curve.set(xlabel="round (5 local epochs each)", ylabel="mean client accuracy (own test set)",
              ylim=(0, 1), title=title)  # fmt: skip
    curve.legend(loc="lower right")
    final.set_xticks(range(len(order)), order, rotation=15)
    final.set(ylabel="mean client accuracy after the last round", ylim=(0, 1),
              title="last round: mean over seeds (bar), each seed (dot)")  # fmt: skip
    fig.tight_layout()
    save_figure(fig, RESULTS / "accuracy.png")
    table = last.groupby("scheme", sort=False).mean_client_acc.agg(["mean", "std", "count"])
    groups = last.groupby("scheme", sort=False).averaged_groups.mean()
    table = table.assign(averaged_groups=groups).round(3)
    print("| scheme | " + " | ".join(table.columns) + " |")
    print("|---" * (len(table.columns) + 1) + "|")
    for scheme, row in table.iterrows():
        print(f"| {scheme} | " + " | ".join(f"{v:g}" for v in row) + " |")


if __name__ == "__main__":
    main()
