"""Weight matching: permuted networks compute the same function; alignment finds permutations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lwlc.core.alignment import apply_permutations, permutation_spec, weight_matching
from lwlc.core.errors import LwlcError
from lwlc.data import DigitsDataModule
from lwlc.models import MLP, VGG, ResNet18, SmallCNN


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny tensors: one thread avoids contention on a shared machine (conftest restores it)."""
    torch.set_num_threads(1)


ARCHITECTURES = {
    "mlp": (lambda: MLP(in_features=64, width=32, depth=3), (6, 1, 8, 8)),
    "small_cnn": (lambda: SmallCNN(in_channels=1, width=8), (6, 1, 8, 8)),
    "vgg_bn": (lambda: VGG(depth=11, batch_norm=True, width=8), (6, 3, 32, 32)),
    "vgg": (lambda: VGG(depth=11, batch_norm=False, width=8), (6, 3, 32, 32)),
    "resnet18_bn": (lambda: ResNet18(norm="batch", width=8), (6, 3, 32, 32)),
    "resnet18_none": (lambda: ResNet18(norm="none", width=8), (6, 3, 32, 32)),
}


def random_network(make, seed: int) -> nn.Module:
    """A fresh network whose BatchNorm layers have non-trivial affine and running statistics."""
    torch.manual_seed(seed)
    net = make()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def outputs(make, state: dict, x: torch.Tensor) -> torch.Tensor:
    net = make()
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        return net(x)


def sq_distance(a: dict, b: dict) -> float:
    return sum(float(((a[k] - b[k]) ** 2).sum()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_permuted_b_computes_the_same_outputs_as_b(arch: str) -> None:
    make, shape = ARCHITECTURES[arch]
    a, b = random_network(make, 0).state_dict(), random_network(make, 1).state_dict()
    permuted, perms = weight_matching(make(), a, b)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(outputs(make, permuted, x), outputs(make, b, x), atol=1e-5, rtol=0)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    assert sq_distance(a, permuted) < sq_distance(a, b)
    stats = [k for k in b if k.endswith("running_mean")]  # BN statistics move with their units
    assert all(not torch.equal(permuted[k], b[k]) for k in stats)
    assert all(torch.equal(permuted[k], b[k]) for k in b if k.endswith("num_batches_tracked"))


def permute_mlp_by_hand(state: dict, depth: int, perms: list[torch.Tensor]) -> dict:
    """Unit i of hidden layer n becomes old unit perms[n][i]: rows of fc_n, columns of the next."""
    out = dict(state)
    for n, perm in enumerate(perms, start=1):
        out[f"fc{n}.weight"] = out[f"fc{n}.weight"][perm]
        out[f"fc{n}.bias"] = out[f"fc{n}.bias"][perm]
        nxt = f"fc{n + 1}" if n < depth else "head"
        out[f"{nxt}.weight"] = out[f"{nxt}.weight"][:, perm]
    return out


def test_weight_matching_undoes_a_hand_made_permutation_of_an_mlp() -> None:
    make = ARCHITECTURES["mlp"][0]
    a = random_network(make, 0).state_dict()
    g = torch.Generator().manual_seed(3)
    hidden = [torch.randperm(32, generator=g) for _ in range(3)]
    b = permute_mlp_by_hand(a, 3, hidden)
    aligned, perms = weight_matching(make(), a, b)
    assert all(torch.equal(aligned[k], a[k]) for k in a)
    inverses = [torch.argsort(p) for p in hidden]
    assert all(torch.equal(perms[f"fc{n}"], inverses[n - 1]) for n in (1, 2, 3))


def test_weight_matching_undoes_a_hand_made_permutation_of_vgg_with_batchnorm() -> None:
    make = ARCHITECTURES["vgg_bn"][0]
    a = random_network(make, 0).state_dict()
    net = make()
    convs = [i for i, m in enumerate(net.features) if isinstance(m, nn.Conv2d)]
    b = dict(a)
    g = torch.Generator().manual_seed(4)
    for j, i in enumerate(convs):
        perm = torch.randperm(net.features[i].out_channels, generator=g)
        b[f"features.{i}.weight"] = b[f"features.{i}.weight"][perm]
        for name in ("weight", "bias", "running_mean", "running_var"):
            b[f"features.{i + 1}.{name}"] = b[f"features.{i + 1}.{name}"][perm]
        nxt = f"features.{convs[j + 1]}.weight" if j + 1 < len(convs) else "classifier.weight"
        b[nxt] = b[nxt][:, perm]
    aligned, _ = weight_matching(make(), a, b)
    assert all(torch.equal(aligned[k], a[k]) for k in a)


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_resnet_residual_streams_share_one_permutation_per_stage(norm: str) -> None:
    spec = permutation_spec(ResNet18(norm=norm, width=8))
    # 4 residual streams (the stem joins layer1's) and one inner permutation per block (8).
    assert len(spec.sizes) == 12
    owner = {ref: p for p, refs in spec.axes.items() for ref in refs}
    stream1 = owner[("conv1.weight", 0)]
    joined = ["layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv1", "layer2.0.shortcut.0"]
    axes = [0, 0, 1, 1]  # outputs of layer1's blocks, inputs of layer2's first block
    assert all(owner[(f"{m}.weight", ax)] == stream1 for m, ax in zip(joined, axes, strict=True))
    stream2 = owner[("layer2.0.shortcut.0.weight", 0)]
    assert stream2 != stream1
    assert owner[("layer2.0.conv2.weight", 0)] == owner[("layer2.1.conv2.weight", 0)] == stream2
    assert owner[("layer1.0.conv1.weight", 0)] == owner[("layer1.0.conv2.weight", 1)] != stream1
    assert ("fc.weight", 0) not in owner  # the logits keep their order
    assert owner[("fc.weight", 1)] == owner[("layer4.1.conv2.weight", 0)]
    if norm == "batch":
        assert owner[("layer2.0.shortcut.1.running_var", 0)] == stream2


def test_weight_matching_recovers_random_permutations_of_a_resnet() -> None:
    make = ARCHITECTURES["resnet18_bn"][0]
    net = make()
    spec = permutation_spec(net)
    a = random_network(make, 0).state_dict()
    g = torch.Generator().manual_seed(5)
    hidden = {p: torch.randperm(n, generator=g) for p, n in spec.sizes.items()}
    b = apply_permutations(spec, a, hidden)
    aligned, perms = weight_matching(net, a, b)
    assert all(torch.equal(aligned[k], a[k]) for k in a)
    assert all(torch.equal(hidden[p][perms[p]], torch.arange(len(perms[p]))) for p in perms)


class FlattenedConvNet(nn.Module):
    """A Linear reading 2x2 flattened conv features (4 entries per channel), then a reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 5, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(20, 12)
        self.fc2 = nn.Linear(12, 3)
        self.out = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(torch.flatten(self.pool(F.relu(self.conv(x))), 1)))
        h = self.fc2(h).reshape(-1, 3)  # reshape is not understood: fc2's units stay in place
        return self.out(h)


def test_flattened_conv_features_are_permuted_in_blocks_and_unknown_ops_pin_units() -> None:
    spec = permutation_spec(FlattenedConvNet())
    assert set(spec.sizes) == {"conv", "fc"}
    a = random_network(FlattenedConvNet, 0).state_dict()
    b = random_network(FlattenedConvNet, 1).state_dict()
    permuted, perms = weight_matching(FlattenedConvNet(), a, b)
    x = torch.randn(4, 2, 6, 6)
    expected = outputs(FlattenedConvNet, b, x)
    assert torch.allclose(outputs(FlattenedConvNet, permuted, x), expected, atol=1e-6)
    blocks = b["fc.weight"].reshape(12, 5, 4)[:, perms["conv"]].reshape(12, 20)
    assert torch.equal(permuted["fc.weight"], blocks[perms["fc"]])


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else x


def test_untraceable_model_is_a_user_error() -> None:
    with pytest.raises(LwlcError, match="cannot trace DataDependent with torch.fx"):
        permutation_spec(DataDependent())


def train_mlp(x: torch.Tensor, y: torch.Tensor, seed: int) -> MLP:
    torch.manual_seed(seed)
    net = MLP(in_features=64, width=64, depth=2)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    order = torch.Generator().manual_seed(seed)
    for _ in range(6):
        for idx in torch.randperm(len(y), generator=order).split(32):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def test_alignment_lowers_the_midpoint_loss_barrier_of_independently_trained_mlps() -> None:
    data = DigitsDataModule()
    x, y = data.tensors("train")
    xt, yt = data.tensors("test")
    a, b = train_mlp(x, y, 0).state_dict(), train_mlp(x, y, 1).state_dict()
    aligned, _ = weight_matching(MLP(in_features=64, width=64, depth=2), a, b)

    def loss(state: dict) -> float:
        logits = outputs(lambda: MLP(in_features=64, width=64, depth=2), state, xt)
        return F.cross_entropy(logits, yt).item()

    def barrier(other: dict) -> float:
        return loss({k: (a[k] + other[k]) / 2 for k in a}) - (loss(a) + loss(other)) / 2

    assert loss(aligned) == pytest.approx(loss(b), abs=1e-5)
    assert barrier(b) > 0.05
    assert barrier(aligned) < barrier(b) / 3
