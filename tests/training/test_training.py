"""The training modules: how pairs are initialised and spawned, resume, and the LR schedule."""

import copy
import csv
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import CONFIGS
from lwlc.commands.cli import main
from lwlc.core.errors import LwlcError
from lwlc.data import DigitsDataModule
from lwlc.data.base import TensorBatches
from lwlc.models import MLP
from lwlc.training import ClassifierModule, PairedModule
from lwlc.training.schedules import WarmupCosine
from lwlc_runs import quiet_trainer

DIGITS = str(CONFIGS / "digits_mlp.yaml")


def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_each_member_is_the_template_built_under_its_init_seed() -> None:
    pair = PairedModule(MLP(width=16), init_seed_a=3, init_seed_b=7)
    torch.manual_seed(3)
    expected_a = MLP(width=16)
    torch.manual_seed(7)
    expected_b = MLP(width=16)
    assert_same(snapshot(pair.net_a), snapshot(expected_a))
    assert_same(snapshot(pair.net_b), snapshot(expected_b))


def test_equal_init_seeds_give_bit_identical_members() -> None:
    pair = PairedModule(MLP(width=16), init_seed_a=5, init_seed_b=5)
    assert_same(snapshot(pair.net_a), snapshot(pair.net_b))


def test_different_init_seeds_give_members_that_differ_in_every_tensor() -> None:
    pair = PairedModule(MLP(width=16), init_seed_a=0, init_seed_b=1)
    a, b = snapshot(pair.net_a), snapshot(pair.net_b)
    assert all(not torch.equal(a[k], b[k]) for k in a)


def test_reinitialising_members_leaves_the_global_rng_alone() -> None:
    template = MLP(width=16)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    PairedModule(template, init_seed_a=0, init_seed_b=1)
    assert torch.equal(torch.rand(3), expected)


def test_members_do_not_share_parameters_with_the_template() -> None:
    template = MLP(width=16)
    pair = PairedModule(template, init_seed_a=0, init_seed_b=0)
    ids = {id(p) for p in template.parameters()}
    assert not ids & {id(p) for p in pair.parameters()}


def seeds(init_a: int, init_b: int, order_a: int, order_b: int) -> dict[str, int]:
    return dict(init_seed_a=init_a, init_seed_b=init_b, order_seed_a=order_a, order_seed_b=order_b)


@pytest.mark.parametrize(
    ("kwargs", "init", "order"),
    [
        (seeds(0, 0, 0, 1), "shared", "different"),
        (seeds(0, 1, 2, 3), "independent", "different"),
        (seeds(0, 1, 4, 4), "independent", "shared"),
        ({"spawn_steps": 5}, "spawn", "different"),
    ],
)
def test_pairing_says_how_the_pair_was_made(kwargs: dict, init: str, order: str) -> None:
    pair = PairedModule(MLP(width=16), **kwargs)
    pairing = pair.pairing()
    assert (pairing["init"], pairing["order"]) == (init, order)
    for key, value in kwargs.items():
        assert pairing[key] == value


def test_negative_spawn_steps_are_a_user_error() -> None:
    with pytest.raises(LwlcError, match="spawn_steps=-1"):
        PairedModule(MLP(width=16), spawn_steps=-1)


class SGDPair(PairedModule):
    """A pair with a fixed optimizer, for driving a Trainer without the CLI."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class SpawnRecorder(pl.Callback):
    """Records both members after every optimizer step, and the state just before step k+1."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.after_step: list[tuple[dict, dict]] = []
        self.before_step_k1: dict[str, object] = {}

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        if trainer.global_step == self.k:

            def momentum(net: nn.Module) -> list[torch.Tensor]:
                return [optimizer.state[p]["momentum_buffer"].clone() for p in net.parameters()]

            self.before_step_k1 = {
                "b": snapshot(module.net_b),
                "momentum_a": momentum(module.net_a),
                "momentum_b": momentum(module.net_b),
            }

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.after_step.append((snapshot(module.net_a), snapshot(module.net_b)))


def test_spawn_trains_only_a_for_k_steps_then_copies_a_with_its_momentum_into_b() -> None:
    k = 3
    pair = SGDPair(MLP(width=16), init_seed_a=0, init_seed_b=1, spawn_steps=k)
    initial_b = snapshot(pair.net_b)
    recorder = SpawnRecorder(k)
    data = DigitsDataModule(batch_size=32, order_seeds=pair.order_seeds)
    quiet_trainer(max_steps=k + 2, callbacks=[recorder]).fit(pair, datamodule=data)

    for _, b in recorder.after_step[:k]:
        assert_same(b, initial_b)
    a_after_k = recorder.after_step[k - 1][0]
    assert_same(recorder.before_step_k1["b"], a_after_k)
    for m_a, m_b in zip(
        recorder.before_step_k1["momentum_a"], recorder.before_step_k1["momentum_b"], strict=True
    ):
        assert torch.equal(m_a, m_b) and m_a.abs().sum() > 0
    a_end, b_end = recorder.after_step[-1]
    assert not torch.equal(a_end["head.weight"], b_end["head.weight"])


def test_a_pair_with_shared_order_and_init_trains_identical_members() -> None:
    pair = SGDPair(MLP(width=16), init_seed_a=2, init_seed_b=2, order_seed_a=9, order_seed_b=9)
    data = DigitsDataModule(batch_size=32, order_seeds=pair.order_seeds)
    quiet_trainer(max_steps=5).fit(pair, datamodule=data)
    assert_same(snapshot(pair.net_a), snapshot(pair.net_b))


def test_data_module_with_the_wrong_order_seeds_is_a_user_error() -> None:
    pair = SGDPair(MLP(width=16), order_seed_a=0, order_seed_b=1)
    data = DigitsDataModule(batch_size=32, order_seeds=[0])
    with pytest.raises(LwlcError, match=r"order_seeds=\[0\]"):
        quiet_trainer(max_steps=1).fit(pair, datamodule=data)


def test_hyper_parameters_leave_out_a_network_built_in_python() -> None:
    single = ClassifierModule(MLP(width=16))
    pair = PairedModule(MLP(width=16))
    assert "model" not in single.hparams and "model" not in pair.hparams
    assert pair.hparams["order_seed_b"] == 1


def fit_digits(root: Path, *extra: str) -> None:
    """``lwlc fit`` of the digits pair with every output under ``root``."""
    main(
        ["fit", "--config", DIGITS, "--trainer.default_root_dir", str(root)]
        + ["--trainer.logger.init_args.save_dir", str(root)]
        + ["--trainer.enable_progress_bar", "false", *extra]
    )


def logged_epochs(metrics_csv: Path) -> set[int]:
    with metrics_csv.open() as f:
        return {int(row["epoch"]) for row in csv.DictReader(f)}


class ProcessOf:
    """Stands in for the Trainer of one of ``world`` DDP processes: ``strategy.reduce`` is the
    all-reduce of the targets counted in this step's batches of all processes, given here."""

    def __init__(self, world: int, global_counts: list[int]) -> None:
        self.world_size = world
        self.global_step = 0
        self.strategy = self
        self.global_counts = global_counts
        self.local_counts: list[list[int]] = []

    def reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        self.local_counts.append(tensor.tolist())
        return torch.tensor(self.global_counts)


@pytest.mark.parametrize(
    ("n", "shares"),
    [
        (13, [list(range(0, 13, 2)), list(range(1, 13, 2))]),  # 7 and 6 samples
        (3, [[0], [1], [2], [-1 - 0]]),  # a process with only padding
    ],
    ids=["uneven", "padding-only"],
)
def test_uneven_shares_of_a_global_batch_average_to_the_one_process_gradient(
    monkeypatch: pytest.MonkeyPatch, n: int, shares: list[list[int]]
) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(n, 1, 8, 8), torch.randint(0, 10, (n,))
    template = PairedModule(MLP(64, 10, 16, 1), init_seed_b=1, order_seed_b=0)
    # One process: the mean loss of each member over the whole global batch.
    reference = copy.deepcopy(template)
    logits_a, logits_b = reference(x)
    mean_loss = F.cross_entropy(logits_a, y) + F.cross_entropy(logits_b, y)
    mean_loss.backward()
    expected = [p.grad.clone() for p in reference.parameters()]
    # DDP: every process's objective on its share, gradients averaged over the processes.
    world, objectives = len(shares), []
    grads = [torch.zeros_like(p) for p in template.parameters()]
    for share in shares:
        process = copy.deepcopy(template)
        monkeypatch.setattr(process, "log", lambda *args, **kwargs: None)
        process.trainer = ProcessOf(world, [n, n])
        objective = process.training_step(TensorBatches(x, y).__getitems__(share), 0)
        objective.backward()
        real = sum(i >= 0 for i in share)
        assert process.trainer.local_counts == [[real, real]]
        objectives.append(objective.item())
        for total, p in zip(grads, process.parameters(), strict=True):
            total += p.grad / world
    assert sum(objectives) / world == pytest.approx(mean_loss.item(), rel=1e-6)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    fit_digits(tmp_path / "straight", "--trainer.max_epochs", "2")
    fit_digits(tmp_path / "resumed", "--trainer.max_epochs", "1")
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    fit_digits(tmp_path / "resumed", "--trainer.max_epochs", "2", "--ckpt_path", str(last))

    def final(run: str) -> dict:
        return torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)

    straight, resumed = final("straight"), final("resumed")
    assert straight["epoch"] == resumed["epoch"] == 1  # last.ckpt is the last epoch's state
    assert_same(resumed["state_dict"], straight["state_dict"])
    # The second process trained epoch 1 only: it resumed rather than started afresh.
    assert logged_epochs(tmp_path / "resumed" / "logs" / "version_1" / "metrics.csv") == {1}
    assert logged_epochs(tmp_path / "straight" / "logs" / "version_0" / "metrics.csv") == {0, 1}


def test_warmup_cosine_rises_linearly_then_follows_a_cosine_to_zero() -> None:
    base_lr, warmup, total, start = 0.05, 4, 12, 0.002
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    schedule = WarmupCosine(optimizer, warmup=warmup / total, start_factor=start, total_steps=total)
    rates = []
    for _ in range(total + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(1e-4)
    assert rates[2] == pytest.approx(1e-4 + (0.05 - 1e-4) / 2)
    assert rates[warmup] == pytest.approx(base_lr)
    assert rates[warmup + 4] == pytest.approx(base_lr / 2)  # cosine midpoint
    assert rates[warmup + 2] == pytest.approx(base_lr * (1 + math.cos(math.pi / 4)) / 2)
    assert rates[total] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"warmup": -0.1}, "warmup=-0.1"),
        ({"warmup": 1.0}, "warmup=1.0"),
        ({"start_factor": 0.0}, "start_factor=0.0"),
        ({"total_steps": 0}, "run has 0 optimizer steps"),
    ],
)
def test_warmup_cosine_rejects_impossible_settings(kwargs: dict, match: str) -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(LwlcError, match=match):
        WarmupCosine(optimizer, **kwargs)


def test_a_plain_trainer_fits_a_pair_with_the_papers_defaults(tmp_path) -> None:
    """No CLI: the module's own optimizer (the paper's SGD) trains it, and the defaults are the
    paper's pairing (one shared initialisation, two data orders)."""
    from lightning.pytorch import Trainer

    from lwlc.data import DigitsDataModule

    pair = PairedModule(MLP(width=16))
    assert pair.pairing()["init"] == "shared" and pair.pairing()["order"] == "different"
    start = {k: v.clone() for k, v in pair.state_dict().items()}
    for k in pair.net_a.state_dict():
        assert torch.equal(start[f"net_a.{k}"], start[f"net_b.{k}"])
    trainer = Trainer(
        max_epochs=1, limit_train_batches=5, limit_val_batches=0, accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    data = DigitsDataModule(batch_size=32)
    trainer.fit(pair, data)
    assert data.order_seeds == [0, 1]
    (optimizer,) = trainer.optimizers
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.9, 5e-4)
    after = pair.state_dict()
    moved = [k for k in after if not torch.equal(after[k], start[k])]
    assert moved and any(k.startswith("net_b.") for k in moved)
    # different data orders: the members part ways after the first steps
    assert not torch.equal(after["net_a.fc1.weight"], after["net_b.fc1.weight"])


def test_the_optimizer_and_schedule_come_from_init_args(tmp_path) -> None:
    """A plain Trainer uses the optimizer and scheduler the module was given."""
    from functools import partial

    from lightning.pytorch import Trainer

    from lwlc.data import DigitsDataModule

    single = ClassifierModule(
        MLP(width=16),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
    )
    trainer = Trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=0, accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(single, DigitsDataModule(batch_size=32))
    (optimizer,) = trainer.optimizers
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**2)
    saved = trainer.lightning_module.hparams
    assert "optimizer" not in saved and "lr_scheduler" not in saved  # callables never pickled
