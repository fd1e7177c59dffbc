"""configs/paper_*.yaml build the paper authors' networks, schedules and normalisation
(github.com/link-er/layer-wise-lmc, LLMC/models and LLMC/single_train_exp.py), checked against
their definitions written out here: torchvision's models modified exactly as their code does."""

from __future__ import annotations

import importlib
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torchvision.models import resnet18, vgg11

from conftest import CONFIGS
from lwlc.models.base import StagedNet


def config(name: str) -> dict[str, Any]:
    """The YAML of configs/<name>.yaml."""
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


def build(entry: dict[str, Any], *args: Any) -> Any:
    """Instantiate a ``class_path`` / ``init_args`` entry."""
    module, _, name = entry["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(*args, **entry.get("init_args", {}))


def paper_model(name: str) -> StagedNet:
    return build(config(name)["model"]["init_args"]["model"])


# The authors' definitions (LLMC/models), transcribed.
def authors_vgg11() -> nn.Module:
    return vgg11(num_classes=10)


def authors_resnet18_nonorm() -> nn.Module:
    net = resnet18(norm_layer=nn.Identity, num_classes=10)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
    net.maxpool = nn.Identity()
    return net


class AuthorsBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, in_planes, 3, stride, 1, groups=in_planes, bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes, track_running_stats=False)
        self.conv2 = nn.Conv2d(in_planes, out_planes, 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class AuthorsMobileNet(nn.Module):
    cfg = [64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512, (1024, 2), 1024]

    def __init__(self, num_classes: int = 100) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32, track_running_stats=False)
        layers, in_planes = [], 32
        for x in self.cfg:
            out, stride = (x, 1) if isinstance(x, int) else x
            layers.append(AuthorsBlock(in_planes, out, stride))
            in_planes = out
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.avg_pool2d(out, 2).view(x.shape[0], -1))


def shapes(net: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in net.parameters()]


def same_outputs(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    """Copy ``theirs``' parameters into ``ours`` in order and compare the logits."""
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            p.copy_(q)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


def test_vgg11_is_torchvisions_vgg11_at_cifar_size() -> None:
    torch.manual_seed(0)
    ours, theirs = paper_model("paper_cifar10_vgg11"), authors_vgg11()
    assert shapes(ours) == shapes(theirs)
    assert shapes(ours)[-6] == (4096, 512 * 7 * 7)  # the 1x1 map pooled to 7x7
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == 128_807_306
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ours.modules())
    assert sum(isinstance(m, nn.Dropout) for m in ours.modules()) == 2
    # torchvision's init: linear weights N(0, 0.01), conv Kaiming-normal fan-out.
    assert ours.classifier[3].weight.std().item() == pytest.approx(0.01, rel=0.02)
    conv = ours.features[0]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.1)
    same_outputs(ours.eval(), theirs.eval(), torch.randn(2, 3, 32, 32))


def test_resnet18_is_the_authors_cifar_resnet18_nonorm() -> None:
    torch.manual_seed(0)
    ours, theirs = paper_model("paper_cifar10_resnet18"), authors_resnet18_nonorm()
    assert shapes(ours) == shapes(theirs)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == 11_164_362
    convs = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ours.modules())
    theirs_convs = [m for m in theirs.modules() if isinstance(m, nn.Conv2d)]
    for a, b in zip(convs, theirs_convs, strict=True):  # same init law layer by layer
        assert a.weight.std().item() == pytest.approx(b.weight.std().item(), rel=0.15)
    same_outputs(ours, theirs, torch.randn(2, 3, 32, 32))


def test_mobilenet_is_the_authors_cifar100_mobilenet() -> None:
    torch.manual_seed(0)
    ours, theirs = paper_model("paper_cifar100_mobilenet"), AuthorsMobileNet(100)
    assert shapes(ours) == shapes(theirs)
    count = sum(p.numel() for p in ours.parameters())
    planes = [32, 64, 128, 128, 256, 256, *[512] * 6, 1024, 1024]
    by_hand = 3 * 32 * 9 + 2 * 32 + 1024 * 100 + 100
    pairs = zip(planes[:-1], planes[1:], strict=True)
    by_hand += sum(i * 9 + 2 * i + i * o + 2 * o for i, o in pairs)
    assert count == sum(p.numel() for p in theirs.parameters()) == by_hand == 3_309_476
    x = torch.randn(4, 3, 32, 32)
    same_outputs(ours.eval(), theirs.eval(), x)  # batch statistics in eval mode too
    same_outputs(ours.train(), theirs.train(), x)


def test_mnist_mlp_has_three_hidden_layers() -> None:
    ours = paper_model("paper_mnist_mlp")
    linears = [m for m in ours.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 512), (512, 512), (512, 512), (512, 10),
    ]  # fmt: skip


def rates(name: str, total: int, steps: list[int]) -> list[float]:
    """The configured optimizer's rate after each of ``steps`` over a run of ``total`` steps."""
    cfg = config(name)
    param = nn.Parameter(torch.zeros(1))
    optimizer = build(cfg["optimizer"], [param])
    entry = {**cfg["lr_scheduler"]}
    entry["init_args"] = {**entry["init_args"], "total_steps": total}
    scheduler = build(entry, optimizer)
    out, done = [], 0
    for step in steps:
        while done < step:
            optimizer.step()
            scheduler.step()
            done += 1
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_resnet18_schedule_is_100_warmup_steps_from_1e4_then_cosine() -> None:
    total, steps = 1100, [0, 50, 100, 600, 1100]
    # The authors' formula: lr_s = 1e-4 + (0.05 - 1e-4) s / 100 for s < 100, then cosine.
    expected = [1e-4, 1e-4 + (0.05 - 1e-4) * 0.5, 0.05]
    expected += [0.025 * (1 + math.cos(math.pi * (s - 100) / 1000)) for s in steps[3:]]
    assert rates("paper_cifar10_resnet18", total, steps) == pytest.approx(expected, abs=1e-9)


def test_vgg_and_mobilenet_schedules_are_steplr_and_multisteplr() -> None:
    # StepLR(30, 0.5) over 200 epochs of 10 steps: 0.05 * 0.5 ** (epoch // 30).
    steps = [0, 299, 300, 600, 1999]
    expected = [0.05 * 0.5 ** ((s // 10) // 30) for s in steps]
    assert rates("paper_cifar10_vgg11", 2000, steps) == pytest.approx(expected)
    # MultiStepLR([100, 150], 0.1) over 200 epochs of 10 steps.
    steps = [0, 999, 1000, 1499, 1500, 1999]
    expected = [0.05 * 0.1 ** sum(s // 10 >= m for m in (100, 150)) for s in steps]
    assert rates("paper_cifar100_mobilenet", 2000, steps) == pytest.approx(expected)


def test_data_is_the_full_training_set_with_the_authors_normalisation() -> None:
    cifar10 = build(config("paper_cifar10_vgg11")["data"])
    assert cifar10.std == (0.2023, 0.1994, 0.2010)
    assert cifar10.mean == (0.4914, 0.4822, 0.4465)
    assert cifar10.val_size == 0
    assert build(config("paper_cifar10_resnet18")["data"]).std == (0.2023, 0.1994, 0.2010)
    cifar100 = build(config("paper_cifar100_mobilenet")["data"])
    assert (cifar100.mean, cifar100.std) == ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276))
    for name in ("paper_cifar10_vgg11", "paper_cifar10_resnet18", "paper_cifar100_mobilenet"):
        assert config(name)["trainer"]["precision"] == "32-true"


def callback_options(name: str) -> dict[str, Any]:
    """The barrier Callback's options in a paper config (directly or under ``spec:``)."""
    (callback,) = config(name)["trainer"]["callbacks"]
    options = dict(callback["init_args"])
    spec = options.pop("spec", None) or {}
    return {**options, **(spec.get("init_args", spec) if isinstance(spec, dict) else {})}


@pytest.mark.parametrize(
    "name",
    [
        "paper_cifar10_vgg11",
        "paper_cifar10_resnet18",
        "paper_cifar100_mobilenet",
        "paper_mnist_mlp",
        "paper_fmnist_resnet18",
    ],
)
def test_paper_configs_measure_the_whole_splits_as_the_authors(name: str) -> None:
    assert callback_options(name)["max_samples"] is None


def test_mobilenet_evaluates_in_the_authors_batches_of_256() -> None:
    """Its BatchNorm normalises by the statistics of each evaluation batch (no running
    statistics), so the barrier depends on the batch: the authors test in batches of 256."""
    data = config("paper_cifar100_mobilenet")["data"]["init_args"]
    assert data["eval_batch_size"] == 256
    assert callback_options("paper_cifar100_mobilenet")["batch_size"] == 256


def test_the_fmnist_resnet_config_is_the_papers_resnet_at_width_8_on_one_channel() -> None:
    ours = paper_model("paper_fmnist_resnet18")
    reference = paper_model("paper_cifar10_resnet18")
    assert (
        sum(p.numel() for p in ours.parameters())
        < sum(p.numel() for p in reference.parameters()) / 50
    )
    assert ours.conv1.weight.shape == (8, 1, 3, 3) and ours.conv1.bias is None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ours.modules())
    optimizer = config("paper_fmnist_resnet18")["optimizer"]["init_args"]
    assert (optimizer["lr"], optimizer["momentum"], optimizer["weight_decay"]) == (
        0.05,
        0.9,
        0.0005,
    )
    assert config("paper_fmnist_resnet18")["data"]["init_args"]["batch_size"] == 64
