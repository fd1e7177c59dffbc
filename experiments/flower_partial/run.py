"""FedAvg vs head-personal vs the authors' 9 tensors vs the barrier-chosen set, on Flower.

Every scheme runs through ``lwlc.flower.LayerwiseFedAvg`` and the Lightning clients of
``lwlc.flower.client``, exchanging real Flower messages in one process (the server's
``configure_train``/``aggregate_train`` and each client's ``train``/``evaluate``; no Ray, so the
20 clients cost no actor start-up). Data: digits pooled and divided among 20 clients by
Dirichlet(0.01) with at least 8 samples each, each client's part cut 3:1 into its own training
and test set (PFL-Non-IID, as the authors' CIFAR-10 clients). Model: ResNet-18 without
normalisation, width 8. The score is the mean over clients of the accuracy of each client's own
model on its own test set after every round (5 local epochs per round, SGD 0.05, momentum 0.9).

    python experiments/flower_partial/run.py --seeds 0 1 2 --rounds 6
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from lwlc.core.spec import MeasureSpec
from lwlc.data import DigitsDataModule
from lwlc.flower import BarrierMonitor, ClientSetup, LayerwiseFedAvg
from lwlc.flower.client import evaluate, train
from lwlc.flower.monitor import below_threshold
from lwlc.models import ResNet18
from lwlc.training.federated import FederatedDataModule
from lwlc.training.modules import reinitialize

SCHEMES = {
    "fedavg": "all",
    "head personal": ["conv1", "layer*"],
    "authors' 9 tensors": "authors_resnet18",
    "barrier-chosen": "auto",
}
CLIENTS = 20


class Grid:
    """All nodes, always connected (what FedAvg's sampling asks of a Grid)."""

    def get_node_ids(self) -> list[int]:
        return list(range(1, CLIENTS + 1))


def net() -> torch.nn.Module:
    return ResNet18(num_classes=10, in_channels=1, norm="none", conv_bias=False, width=8)


def run(scheme: str, seed: int, rounds: int, out: Path, max_barrier: float) -> list[dict]:
    def data() -> FederatedDataModule:
        return FederatedDataModule(
            DigitsDataModule(batch_size=32), num_clients=CLIENTS, split="dirichlet",
            concentration=0.01, split_seed=seed, order_seed=seed, min_size=8, test_sets="split",
        )  # fmt: skip

    setup = ClientSetup(model=net, data=data, rounds=rounds, local_epochs=5, lr=0.05)
    model = net()
    reinitialize(model, seed)
    monitor = None
    if SCHEMES[scheme] == "auto":  # barriers on digits' val split, which no client holds
        spec = MeasureSpec(plans=("single",), rest_from=("a",), splits=("val",), num_alphas=3)
        monitor = BarrierMonitor(
            model, DigitsDataModule(), spec, between="average",
            csv_path=out / f"barriers_seed{seed}.csv",
        )  # fmt: skip
    strategy = LayerwiseFedAvg(
        model, SCHEMES[scheme], monitor=monitor, chooser=below_threshold(max_barrier),
        min_available_nodes=CLIENTS, min_train_nodes=CLIENTS, min_evaluate_nodes=CLIENTS,
    )  # fmt: skip
    contexts = {
        n: Context(1, n, {"partition-id": n - 1}, RecordDict(), {}) for n in Grid().get_node_ids()
    }
    arrays, rows = ArrayRecord(model.state_dict()), []
    for r in range(1, rounds + 1):
        messages = strategy.configure_train(r, arrays, ConfigRecord(), Grid())
        replies = [train(setup, m, contexts[m.metadata.dst_node_id]) for m in messages]
        arrays, _ = strategy.aggregate_train(r, replies)
        asks = strategy.configure_evaluate(r, arrays, ConfigRecord(), Grid())
        answers = [evaluate(setup, m, contexts[m.metadata.dst_node_id]) for m in asks]
        accs = [float(a.content["metrics"]["local_acc"]) for a in answers]
        rows.append(
            {
                "scheme": scheme, "seed": seed, "round": r,
                "mean_client_acc": sum(accs) / len(accs),
                "averaged_groups": len(strategy.chosen[r]),
                "averaged": ";".join(strategy.chosen[r]),
            }
        )  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--max-barrier", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "accuracy.csv"
    done = set()
    if path.exists():
        with open(path, newline="") as f:
            done = {(r["scheme"], int(r["seed"])) for r in csv.DictReader(f)}
    for seed in args.seeds:
        for scheme in SCHEMES:
            if (scheme, seed) in done:
                continue
            rows = run(scheme, seed, args.rounds, args.out, args.max_barrier)
            new = not path.exists()
            with open(path, "a", newline="") as f:  # one finished run per append: resumable
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                if new:
                    writer.writeheader()
                writer.writerows(rows)


if __name__ == "__main__":
    main()
