"""Figure and table of experiments/flower_partial/results/accuracy.csv (written by run.py).

python experiments/flower_partial/plot.py
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lwlc.figures import save_figure  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def selection_table() -> None:
    """What ``auto`` chose at each choice (selection*_seed*.csv, one per auto run): the search,
    how many sets the clients measured, the clients' own loss, the limit, the chosen set's loss
    and the share of parameters averaged."""
    print("| run | seed | round | search | sets measured | own loss | limit | chosen loss "
          "| groups | fraction | not chosen |")  # fmt: skip
    print("|---" * 11 + "|")
    for path in sorted(RESULTS.glob("selection*_seed*.csv")):
        run, _, seed = path.stem.rpartition("_seed")
        steps = pd.read_csv(path)
        for rnd, choice in steps.groupby("server_round"):
            loss = [c for c in choice.columns if c.endswith("_loss")][0]
            chosen = choice[choice.accepted].iloc[-1]
            every = set(choice[choice.n_groups == 1].groups)
            left = sorted(every - set(str(chosen.groups).split("+")))
            print(f"| {run} | {seed} | {rnd} | {chosen.search} | {len(choice)} | "
                  f"{chosen.limit - chosen.budget:.3f} | {chosen.limit:.3f} | "
                  f"{chosen[loss]:.3f} | {chosen.n_groups} | {chosen.fraction:.3f} | "
                  f"{', '.join(left)} |")  # fmt: skip


def main() -> None:
    df = pd.read_csv(RESULTS / "accuracy.csv")
    order = list(dict.fromkeys(df.scheme))
    fig, (curve, final) = plt.subplots(1, 2, figsize=(11, 4))
    last = df[df["round"] == df["round"].max()]
    for i, scheme in enumerate(order):
        rows = df[df.scheme == scheme].groupby("round").mean_client_acc
        mean, low, high = rows.mean(), rows.min(), rows.max()
        auto = scheme.startswith("barrier-chosen")  # drawn dashed: they may lie on another
        curve.plot(mean.index, mean.values, marker="osx^v<>"[i], label=scheme, color=f"C{i}",
                   linestyle="--" if auto else "-")  # fmt: skip
        curve.fill_between(mean.index, low.values, high.values, alpha=0.2, color=f"C{i}")
        accs = last[last.scheme == scheme].mean_client_acc
        final.bar(i, accs.mean(), color=f"C{i}", alpha=0.6)
        final.scatter([i] * len(accs), accs, color="black", s=12, zorder=3)
    seeds = df.seed.nunique()
    title = f"20 clients, Dirichlet(0.01) digits; {seeds} seeds (band: range)"
    curve.set(xlabel="round (5 local epochs each)", ylabel="mean client accuracy (own test set)",
              ylim=(0, 1), title=title)  # fmt: skip
    curve.legend(loc="lower right", bbox_to_anchor=(1, 0.12), fontsize=8)  # clear of fedavg
    final.set_xticks(range(len(order)), [textwrap.fill(s, 10) for s in order], fontsize=8)
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
    selection_table()


if __name__ == "__main__":
    main()
