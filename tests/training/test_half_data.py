"""The authors' half-data pairing: one initialisation, each member on its own disjoint half."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from conftest import CONFIGS
from lwlc.commands.cli import main
from lwlc.core.errors import LwlcError
from lwlc.data import DigitsDataModule
from lwlc.models import MLP, ResNet18
from lwlc.training import PairedModule, reinitialize
from lwlc_runs import quiet_trainer


class SGDPair(PairedModule):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class RowRecorder(pl.Callback):
    """The training inputs each member received, as row bytes."""

    def __init__(self) -> None:
        self.rows: dict[str, list[bytes]] = {"a": [], "b": []}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        for member, (x, _) in zip("ab", batch, strict=True):
            self.rows[member] += [row.numpy().tobytes() for row in x]


def test_the_two_halves_are_disjoint_and_cover_the_training_split() -> None:
    data = DigitsDataModule(batch_size=32)
    n = len(data.tensors("train")[1])
    a, b = data.halves()
    assert (len(a), len(b)) == ((n + 1) // 2, n // 2)
    assert set(a.tolist()).isdisjoint(b.tolist())
    assert sorted(torch.cat([a, b]).tolist()) == list(range(n))
    again = DigitsDataModule(batch_size=32).halves()
    assert torch.equal(again[0], a) and torch.equal(again[1], b)  # the same in every run


def test_each_member_trains_one_epoch_on_exactly_its_own_half_from_one_init() -> None:
    pair = SGDPair(MLP(width=16), init_seed_a=3, init_seed_b=3, member_data="halves")
    for (key, a), b in zip(
        pair.net_a.state_dict().items(), pair.net_b.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key  # members start equal
    data = DigitsDataModule(batch_size=50, val_size=0.1)
    recorder = RowRecorder()
    quiet_trainer(max_epochs=1, callbacks=[recorder]).fit(pair, datamodule=data)
    assert data.member_halves is True  # the pair told the data module
    inputs = data.tensors("train")[0]
    for member, half in zip("ab", data.halves(), strict=True):
        expected = sorted(row.numpy().tobytes() for row in inputs[half])
        assert sorted(recorder.rows[member]) == expected
    assert not torch.equal(pair.net_a.head.weight, pair.net_b.head.weight)


def test_lwlc_fit_records_the_half_data_pairing_in_the_checkpoint(tmp_path: Path) -> None:
    main(
        ["fit", "--config", str(CONFIGS / "digits_mlp.yaml")]
        + ["--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"]
        + ["--trainer.callbacks=[]", "--trainer.max_steps", "2"]
        + ["--trainer.enable_progress_bar", "false", "--model.init_args.init_seed_b", "0"]
        + ["--model.init_args.member_data", "halves"]
    )
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    pairing = ckpt["lwlc_pairing"]
    assert (pairing["init"], pairing["data"]) == ("shared", "halves")


def test_a_data_module_split_otherwise_is_a_user_error() -> None:
    pair = SGDPair(MLP(width=16), member_data="halves")
    data = DigitsDataModule(batch_size=32, member_halves=False)
    with pytest.raises(LwlcError, match="member_halves=False does not match"):
        quiet_trainer(max_steps=1).fit(pair, datamodule=data)
    with pytest.raises(LwlcError, match="member_data='thirds' is not one of whole, halves"):
        PairedModule(MLP(width=16), member_data="thirds")


def test_a_re_drawn_pair_member_keeps_the_torchvision_init() -> None:
    """PairedModule re-draws its members; the ResNet's torchvision init (Kaiming-normal,
    fan-out) must survive it, not fall back to PyTorch's default (std 1/sqrt(3 fan_in))."""
    net = ResNet18(
        num_classes=10, in_channels=1, norm="none", conv_bias=False, width=8, init="torchvision"
    )
    reinitialize(net, 0)
    for name, conv in [
        ("layer1.0.conv1", net.layer1[0].conv1),
        ("layer4.1.conv2", net.layer4[1].conv2),
    ]:
        out_channels, _, kh, kw = conv.weight.shape
        expected = (2 / (out_channels * kh * kw)) ** 0.5
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.1), name
