"""FedAvg vs head-personal vs the authors' 9 tensors vs the set ``auto`` chooses, on Flower.

Every scheme runs through ``lwlc.flower.LayerwiseFedAvg`` and the Lightning clients of
``lwlc.flower.client``, exchanging real Flower messages in one process (the server's
``configure_train``/``aggregate_train``, each client's ``train``/``evaluate``, and for ``auto``
the layer-set questions the strategy sends on the Grid; no Ray, so the 20 clients cost no actor
start-up). Data: digits pooled and divided among 20 clients by
Dirichlet(0.01) with at least 8 samples each, each client's part cut 3:1 into its own training
and test set (PFL-Non-IID, as the authors' CIFAR-10 clients). Model: ResNet-18 without
normalisation, width 8. The score is the mean over clients of the accuracy of each client's own
model on its own test set after every round (5 local epochs per round, SGD 0.05, momentum 0.9).
``auto``: one round of local training, then the largest set of groups within ``--budget`` nats of
the clients' own models' mean loss on their own test data, kept to the end (variants: measured on
their training data; chosen again every round).

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

from lwlc.data import DigitsDataModule
from lwlc.flower import AutoSelection, ClientSetup, LayerwiseFedAvg
from lwlc.flower.client import evaluate, evaluate_layer_sets, train
from lwlc.models import ResNet18
from lwlc.training.federated import FederatedDataModule
from lwlc.training.modules import reinitialize

SCHEMES = {
    "fedavg": "all",
    "head personal": ["conv1", "layer*"],
    "authors' 9 tensors": "authors_resnet18",
    "barrier-chosen": "auto",
    "barrier-chosen (train data)": "auto",
    "barrier-chosen (every round)": "auto",
}
# auto's variants: the clients' data the candidates are measured on, and how often to choose
AUTO = {
    "barrier-chosen": ("test", 0),
    "barrier-chosen (train data)": ("train", 0),
    "barrier-chosen (every round)": ("test", 1),
}
CLIENTS = 20


class Grid:
    """All nodes, always connected (what FedAvg's sampling asks of a Grid); ``send_and_receive``
    answers the strategy's layer-set questions with each node's client in this process."""

    def __init__(self, setup: ClientSetup | None = None, contexts: dict | None = None) -> None:
        self.setup, self.contexts = setup, contexts or {}

    def get_node_ids(self) -> list[int]:
        return list(range(1, CLIENTS + 1))

    def send_and_receive(self, messages, timeout=None) -> list:
        return [
            evaluate_layer_sets(self.setup, m, self.contexts[m.metadata.dst_node_id])
            for m in messages
        ]


def net() -> torch.nn.Module:
    return ResNet18(num_classes=10, in_channels=1, norm="none", conv_bias=False, width=8)


def run(scheme: str, seed: int, rounds: int, out: Path, args: argparse.Namespace) -> list[dict]:
    def data() -> FederatedDataModule:
        return FederatedDataModule(
            DigitsDataModule(batch_size=32), num_clients=CLIENTS, split="dirichlet",
            concentration=0.01, split_seed=seed, order_seed=seed, min_size=8, test_sets="split",
        )  # fmt: skip

    setup = ClientSetup(model=net, data=data, rounds=rounds, local_epochs=5, lr=0.05)
    model = net()
    reinitialize(model, seed)
    selection = None
    if scheme in AUTO:
        split, every = AUTO[scheme]
        name = "" if scheme == "barrier-chosen" else f"_{split}" if every == 0 else "_every"
        selection = AutoSelection(
            budget=args.budget, select_after=1, every=every, split=split,
            csv_path=out / f"selection{name}_seed{seed}.csv",
        )  # fmt: skip
    strategy = LayerwiseFedAvg(
        model, SCHEMES[scheme], selection=selection,
        min_available_nodes=CLIENTS, min_train_nodes=CLIENTS, min_evaluate_nodes=CLIENTS,
    )  # fmt: skip
    contexts = {
        n: Context(1, n, {"partition-id": n - 1}, RecordDict(), {}) for n in Grid().get_node_ids()
    }
    grid = Grid(setup, contexts)
    arrays, rows = ArrayRecord(model.state_dict()), []
    for r in range(1, rounds + 1):
        messages = strategy.configure_train(r, arrays, ConfigRecord(), grid)
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
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    parser.add_argument("--budget", type=float, default=0.05, help="auto: nats (as merge)")
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
        for scheme in args.schemes:
            if (scheme, seed) in done:
                continue
            rows = run(scheme, seed, args.rounds, args.out, args)
            new = not path.exists()
            with open(path, "a", newline="") as f:  # one finished run per append: resumable
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                if new:
                    writer.writeheader()
                writer.writerows(rows)


if __name__ == "__main__":
    main()
