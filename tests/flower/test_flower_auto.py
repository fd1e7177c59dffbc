"""LayerwiseFedAvg(average="auto"): the groups chosen from the losses the clients measure on their
own data, against a brute force over subsets (a fake losses table, and real digits clients
measured directly with torch), the greedy search, personal layers, and bad options."""

import csv
import dataclasses
import itertools
import logging
import random

import pytest
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from lwlc.core.errors import LwlcError
from lwlc.data import DigitsDataModule
from lwlc.flower import AutoSelection, ClientSetup, LayerwiseFedAvg
from lwlc.flower.client import evaluate_layer_sets, train
from lwlc.flower.selection import decode, layer_set_metrics
from lwlc.models import MLP
from lwlc.training.federated import FederatedDataModule
from lwlc.training.modules import reinitialize

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("flwr").setLevel(logging.WARNING)

NODES = (11, 22, 33)
SAMPLES = {11: 10, 22: 30, 33: 60}  # training samples (FedAvg's weights)
ANSWERED = {11: 5, 22: 20, 33: 15}  # samples each client measures the candidates on
GROUPS = ("fc1", "fc2", "head")
SIZES = {"fc1": 15, "fc2": 12, "head": 12}  # parameters of _net()'s groups


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Messages built outside a Flower run need the identity a run would set."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def _net() -> torch.nn.Module:
    return MLP(in_features=4, width=3, depth=2, num_classes=3)


def _random_state(seed: int) -> dict[str, torch.Tensor]:
    net = _net()
    reinitialize(net, seed)
    return net.state_dict()


class TableGrid:
    """Answers the layer-set questions from a table ``{node: {frozenset(groups): loss}}`` and
    keeps every question it was asked."""

    def __init__(self, table, failing=()) -> None:
        self.table, self.asked, self.failing = table, [], failing

    def get_node_ids(self) -> list[int]:
        return list(NODES)

    def send_and_receive(self, messages, timeout=None) -> list[Message]:
        messages = list(messages)
        self.asked.append(messages)
        replies = []
        for m in messages:
            if m.metadata.dst_node_id in self.failing:
                replies.append(Message(Error(code=0, reason="client crashed"), reply_to=m))
                continue
            sets = [frozenset(decode(s)) for s in m.content["config"]["sets"]]
            losses = [self.table[m.metadata.dst_node_id][s] for s in sets]
            metrics = MetricRecord({"num-examples": ANSWERED[m.metadata.dst_node_id],
                                    "loss": losses, "accuracy": [0.5] * len(sets)})  # fmt: skip
            replies.append(Message(RecordDict({"metrics": metrics}), reply_to=m))
        return replies


def _first_round(strategy, states):
    """Round 1 (warm-up): every node answers with ``states[node]``."""
    net = _net()
    grid = TableGrid({})
    messages = strategy.configure_train(1, ArrayRecord(net.state_dict()), ConfigRecord(), grid)
    replies = [
        Message(
            RecordDict(
                {
                    "arrays": ArrayRecord(states[m.metadata.dst_node_id]),
                    "metrics": MetricRecord({"num-examples": SAMPLES[m.metadata.dst_node_id]}),
                }
            ),
            reply_to=m,
        )  # fmt: skip
        for m in messages
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays


def _table(seed: int):
    rng = random.Random(seed)
    subsets = [frozenset(c) for r in range(4) for c in itertools.combinations(GROUPS, r)]
    return {n: {s: 0.2 + rng.uniform(0, 0.6) * len(s) for s in subsets} for n in NODES}


def _weighted(table, members, nodes=NODES) -> float:
    total = sum(ANSWERED[n] for n in nodes)
    return sum(ANSWERED[n] * table[n][members] for n in nodes) / total


def _brute_force(table, budget, nodes=NODES):
    """The largest fitting subset by parameters, then the lowest loss: every subset in turn."""
    limit = _weighted(table, frozenset(), nodes) + budget
    best, best_key = frozenset(), None
    for r in range(4):
        for combo in itertools.combinations(GROUPS, r):
            loss = _weighted(table, frozenset(combo), nodes)
            if loss <= limit:
                key = (-sum(SIZES[g] for g in combo), loss)
                if best_key is None or key < best_key:
                    best, best_key = frozenset(combo), key
    return best


def _strategy(**options) -> LayerwiseFedAvg:
    return LayerwiseFedAvg(
        _net(), "auto", selection=AutoSelection(**options), min_available_nodes=3,
        min_train_nodes=3,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_the_server_chooses_what_a_brute_force_over_subsets_chooses(seed, tmp_path) -> None:
    table, budget = _table(seed), 0.5
    strategy = _strategy(budget=budget, select_after=1, csv_path=tmp_path / "sel.csv")
    states = {n: _random_state(i + 1) for i, n in enumerate(NODES)}
    arrays = _first_round(strategy, states)
    assert strategy.chosen[1] == []  # warm-up: nothing averaged
    grid = TableGrid(table)
    sent = strategy.configure_train(2, arrays, ConfigRecord(), grid)
    expected = _brute_force(table, budget)
    chosen = set(strategy.selector.results[2].chosen)
    assert {GROUPS[i] for i in chosen} == expected
    assert len(grid.asked) == 2  # the own models first, then every subset in one batch
    for m in grid.asked[0]:  # each client gets its own model and the average
        own = m.content["own"].to_torch_state_dict()
        for key, value in states[m.metadata.dst_node_id].items():
            assert torch.equal(own[key], value)
        assert m.metadata.message_type == "evaluate.layer_sets"
    for m in sent:  # then trains from the average on the chosen groups, its own elsewhere
        got, own = m.content["arrays"].to_torch_state_dict(), states[m.metadata.dst_node_id]
        for key in got:
            if key.split(".")[0] in expected:
                mean = sum(SAMPLES[n] * states[n][key].double() for n in NODES) / 100
                torch.testing.assert_close(got[key].double(), mean), key
            else:
                assert torch.equal(got[key], own[key]), key
    with open(tmp_path / "sel.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["search"] for r in rows} == {"exhaustive"}
    (accepted,) = [r for r in rows if r["accepted"] == "True"]
    assert set(filter(None, accepted["groups"].split("+"))) == expected
    assert float(accepted["test_loss"]) == pytest.approx(_weighted(table, frozenset(expected)))
    own = float(accepted["limit"]) - float(accepted["budget"])
    assert own == pytest.approx(_weighted(table, frozenset()))


def test_a_client_that_fails_to_answer_is_left_out_and_none_answering_is_one_line() -> None:
    table = _table(2)
    strategy = _strategy(budget=0.5)
    arrays = _first_round(strategy, {n: _random_state(i + 1) for i, n in enumerate(NODES)})
    strategy.configure_train(2, arrays, ConfigRecord(), TableGrid(table, failing=(33,)))
    expected = _brute_force(table, 0.5, nodes=(11, 22))
    assert expected != _brute_force(table, 0.5)  # leaving 33 out changes the answer
    assert {GROUPS[i] for i in strategy.selector.results[2].chosen} == expected
    with pytest.raises(LwlcError, match="^no client answered with data for the layer selection"):
        strategy.configure_train(2, arrays, ConfigRecord(), TableGrid(table, failing=NODES))


def _naive_greedy(table, budget):
    """lwlc's greedy search written out: every single group (one request), then the groups in
    order of their loss above the clients' own per parameter, each kept when the set with it
    fits, then the fitting extension of least such cost until none fits. Counts the requests the
    server needs (a set is asked for once)."""
    limit, known, requests = _weighted(table, frozenset()) + budget, {frozenset()}, 1

    def ask(sets):
        nonlocal requests
        new = [s for s in sets if s not in known]
        requests += bool(new)
        known.update(new)
        return [_weighted(table, s) for s in sets]

    base = _weighted(table, frozenset())
    singles = dict(zip(GROUPS, ask([frozenset({g}) for g in GROUPS]), strict=True))

    def cost(loss, below, g):  # loss above ``below`` per parameter, the larger group on ties
        return (max(loss - below, 0.0) / SIZES[g], -SIZES[g])

    chosen, current, remaining = frozenset(), base, []
    for g in sorted(GROUPS, key=lambda g: cost(singles[g], base, g)):
        loss = ask([chosen | {g}])[0] if chosen else singles[g]
        if loss <= limit:
            chosen, current = chosen | {g}, loss
        else:
            remaining.append(g)
    while remaining:
        losses = ask([chosen | {g} for g in remaining])
        fitting = [(cost(x, current, g), x, g) for x, g in zip(losses, remaining, strict=True)
                   if x <= limit]  # fmt: skip
        if not fitting:
            break
        _, current, g = min(fitting)
        chosen = chosen | {g}
        remaining.remove(g)
    return chosen, requests


@pytest.mark.parametrize("seed", range(6))
def test_beyond_exhaustive_max_the_greedy_search_chooses_as_lwlcs_greedy_search(seed) -> None:
    table, budget = _table(seed), 0.7
    strategy = _strategy(budget=budget, exhaustive_max=0)
    arrays = _first_round(strategy, {n: _random_state(i + 1) for i, n in enumerate(NODES)})
    grid = TableGrid(table)
    strategy.configure_train(2, arrays, ConfigRecord(), grid)
    expected, requests = _naive_greedy(table, budget)
    assert strategy.chosen.get(2) is None and strategy.selector.results[2].search == "greedy"
    assert {GROUPS[i] for i in strategy.selector.results[2].chosen} == expected
    assert len(grid.asked) == requests


def test_the_choice_is_kept_or_made_again_every_few_rounds() -> None:
    once, every = AutoSelection(select_after=2), AutoSelection(select_after=2, every=3)
    assert [r for r in range(1, 12) if once.due(r)] == [3]
    assert [r for r in range(1, 12) if every.due(r)] == [3, 6, 9]


def test_bad_options_are_one_line() -> None:
    with pytest.raises(LwlcError, match=r"^budget must be a number >= 0 \(nats\), got -0.1$"):
        AutoSelection(budget=-0.1)
    with pytest.raises(LwlcError, match="^select_after must be >= 1"):
        AutoSelection(select_after=0)
    with pytest.raises(LwlcError, match="^unknown split 'val'; choose from test, train$"):
        AutoSelection(split="val")
    with pytest.raises(LwlcError, match="^selection= applies to average='auto', not to 'all'$"):
        LayerwiseFedAvg(_net(), "all", selection=AutoSelection())
    with pytest.raises(LwlcError, match="unknown layer or group 'body'; available: fc1, fc2"):
        _strategy(choose_from=["body"])
    with pytest.raises(LwlcError, match=r"^select\(\) chooses for average='auto'"):
        LayerwiseFedAvg(_net(), "all").select(2, ArrayRecord(), TableGrid({}))


def test_a_client_measures_each_set_as_the_average_there_and_its_own_model_elsewhere() -> None:
    own, average = _random_state(1), _random_state(2)
    x = torch.randn(25, 4, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (25,), generator=torch.Generator().manual_seed(1))
    sets = ["", "fc1", "fc2;head", "fc1;fc2;head"]
    losses, accuracies = layer_set_metrics(_net(), own, average, sets, x, y)
    for text, loss, accuracy in zip(sets, losses, accuracies, strict=True):
        names = decode(text)
        net = _net()
        net.load_state_dict({k: average[k] if k.split(".")[0] in names else v
                             for k, v in own.items()})  # fmt: skip
        with torch.no_grad():
            logits = net(x)
        assert loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
        assert accuracy == pytest.approx(float((logits.argmax(1) == y).double().mean()))
    with pytest.raises(LwlcError, match="asked for layer group 'conv1', which this client's"):
        layer_set_metrics(_net(), own, average, ["conv1"], x, y)


def _digits() -> FederatedDataModule:
    return FederatedDataModule(
        DigitsDataModule(batch_size=64), num_clients=3, split="dirichlet", concentration=0.3,
        split_seed=2, test_sets="split", min_size=20,
    )  # fmt: skip


def _mlp() -> torch.nn.Module:
    return MLP(in_features=64, width=16, depth=2)


class ClientGrid:
    """Three digits clients in this process; ``send_and_receive`` runs their layer-set answers."""

    def __init__(self, setup: ClientSetup) -> None:
        self.setup = setup
        self.contexts = {n: Context(1, n, {"partition-id": i}, RecordDict(), {})
                         for i, n in enumerate(NODES)}  # fmt: skip

    def get_node_ids(self) -> list[int]:
        return list(NODES)

    def send_and_receive(self, messages, timeout=None) -> list[Message]:
        return [evaluate_layer_sets(self.setup, m, self.contexts[m.metadata.dst_node_id])
                for m in messages]  # fmt: skip


def _direct_losses(states, average, data):
    """Every subset's sample-weighted loss over the clients' own test sets, with plain torch."""
    inputs, labels, owner = data.evaluation_set()
    out = {}
    for r in range(4):
        for combo in itertools.combinations(("fc1", "fc2", "head"), r):
            total, count = 0.0, 0
            for client, state in enumerate(states):
                net = _mlp()
                net.load_state_dict({k: average[k] if k.split(".")[0] in combo else v
                                     for k, v in state.items()})  # fmt: skip
                x, y = inputs[owner == client], labels[owner == client]
                with torch.no_grad():
                    total += float(F.cross_entropy(net(x), y, reduction="sum"))
                count += len(y)
            out[frozenset(combo)] = total / count
    return out


def test_digits_clients_get_the_largest_set_within_the_budget() -> None:
    torch.set_num_threads(1)
    setup = ClientSetup(model=_mlp, data=_digits, rounds=2, local_epochs=3, lr=0.05)
    net = _mlp()
    reinitialize(net, 0)
    strategy = LayerwiseFedAvg(net, "auto", selection=AutoSelection(select_after=1),
                               min_available_nodes=3, min_train_nodes=3)  # fmt: skip
    grid = ClientGrid(setup)
    messages = strategy.configure_train(1, ArrayRecord(net.state_dict()), ConfigRecord(), grid)
    replies = [train(setup, m, grid.contexts[m.metadata.dst_node_id]) for m in messages]
    arrays, _ = strategy.aggregate_train(1, replies)
    by_node = {r.metadata.src_node_id: r.content["arrays"].to_torch_state_dict() for r in replies}
    states = [by_node[n] for n in NODES]  # by partition (node i holds partition i)
    losses = _direct_losses(states, arrays.to_torch_state_dict(), setup.clients_data())
    excess = sorted({v - losses[frozenset()] for v in losses.values()})
    assert excess[-1] > 0.01  # averaging everything costs: the budget below means something
    budget = next(e for e in excess if e > 0.005) / 2 + excess[-1] / 2  # between two sets
    strategy.selector.options = dataclasses.replace(strategy.selector.options, budget=budget)
    sent = strategy.configure_train(2, arrays, ConfigRecord(), grid)
    sizes = {"fc1": 64 * 16 + 16, "fc2": 16 * 16 + 16, "head": 16 * 10 + 10}
    fitting = [s for s, v in losses.items() if v <= losses[frozenset()] + budget]
    expected = max(fitting, key=lambda s: (sum(sizes[g] for g in s), -losses[s]))
    assert 0 < len(expected) < 3
    result = strategy.selector.results[2]
    assert {strategy.selector.groups[i].name for i in result.chosen} == set(expected)
    for step in result.steps:  # every set the clients measured equals the direct computation
        (row,) = [r for r in strategy.selector.rows if r["step"] == result.steps.index(step)]
        names = frozenset(strategy.selector.groups[i].name for i in step.members)
        assert row["test_loss"] == pytest.approx(losses[names], rel=1e-4)
    for m in sent:  # personal layers: the client's own, exactly
        got, own = m.content["arrays"].to_torch_state_dict(), by_node[m.metadata.dst_node_id]
        for key, value in got.items():
            if key.split(".")[0] not in expected:
                assert torch.equal(value, own[key]), key


def test_the_flwr_run_config_declares_autos_options() -> None:
    from lwlc.flower.app import DEFAULTS, selection_of

    config = {**DEFAULTS, "average": "auto", "choose-from": "fc1, head", "budget": 0.2}
    selection = selection_of({**config, "select-every": 2, "select-split": "train"})
    assert selection.choose_from == ["fc1", "head"] and selection.budget == 0.2
    assert (selection.every, selection.split, selection.select_after) == (2, "train", 1)
    assert selection_of({**DEFAULTS, "average": "all"}) is None
    with pytest.raises(LwlcError, match=r"^budget must be a number >= 0 \(nats\), got -1.0$"):
        selection_of({**config, "budget": -1})
