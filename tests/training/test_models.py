"""The model zoo: stage composition equals forward, names, shapes, parameter counts."""

import pytest
import torch
from torch import nn

from lwlc.core.errors import LwlcError
from lwlc.models import MLP, VGG, ResNet18, SmallCNN
from lwlc.models.resnet import BasicBlock

TINY_MODELS = {
    "mlp": (lambda: MLP(in_features=64, width=16, depth=3), (1, 8, 8)),
    "cnn_digits": (lambda: SmallCNN(in_channels=1, width=4), (1, 8, 8)),
    "cnn_cifar": (lambda: SmallCNN(in_channels=3, width=4), (3, 32, 32)),
    "vgg11": (lambda: VGG(depth=11, width=4), (3, 32, 32)),
    "vgg13_bn": (lambda: VGG(depth=13, width=4, batch_norm=True), (3, 32, 32)),
    "vgg16_bn": (lambda: VGG(depth=16, width=4, batch_norm=True), (3, 32, 32)),
    "vgg19": (lambda: VGG(depth=19, width=4), (3, 32, 32)),
    "resnet_bn": (lambda: ResNet18(width=4, norm="batch"), (3, 32, 32)),
    "resnet_none": (lambda: ResNet18(width=4, norm="none"), (3, 32, 32)),
}


def _conv_params(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("train", [True, False])
def test_stage_composition_equals_forward(name: str, train: bool) -> None:
    torch.manual_seed(0)
    build, shape = TINY_MODELS[name]
    model = build().train(train)
    x = torch.randn(5, *shape)
    expected = model(x)
    out = x
    for _, stage in model.stages():
        out = stage(out)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_stage_names_are_qualified_module_names(name: str) -> None:
    model = TINY_MODELS[name][0]()
    modules = dict(model.named_modules())
    for stage_name, stage in model.stages():
        assert modules[stage_name] is stage


@pytest.mark.parametrize("name", TINY_MODELS)
def test_every_stage_is_a_leaf_or_a_residual_block(name: str) -> None:
    model = TINY_MODELS[name][0]()
    stage_names = set()
    for stage_name, stage in model.stages():
        stage_names.add(stage_name)
        if not isinstance(stage, BasicBlock):
            assert list(stage.children()) == [], stage_name
    for param_name, _ in model.named_parameters():
        owner = param_name.rsplit(".", 1)[0]
        assert any(owner == s or owner.startswith(s + ".") for s in stage_names), param_name


def test_mlp_names_and_depth() -> None:
    model = MLP(in_features=64, num_classes=10, width=32, depth=3)
    names = [n for n, _ in model.stages()]
    assert names == ["flatten", "fc1", "act1", "fc2", "act2", "fc3", "act3", "head"]
    assert model.fc1.weight.shape == (32, 64)
    assert model.head.weight.shape == (10, 32)
    assert "head.weight" in dict(model.named_parameters())


def test_mlp_without_hidden_layers_is_linear() -> None:
    model = MLP(in_features=4, num_classes=3, depth=0)
    x = torch.randn(2, 4)
    assert torch.allclose(model(x), x @ model.head.weight.T + model.head.bias)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_small_cnn_output_shape_for_digits_mnist_cifar(shape: tuple[int, ...]) -> None:
    model = SmallCNN(in_channels=shape[0], num_classes=7, width=4)
    assert model(torch.randn(2, *shape)).shape == (2, 7)
    assert "features.0.weight" in dict(model.named_parameters())
    assert "classifier.weight" in dict(model.named_parameters())


def test_mlp_output_shape_for_mnist() -> None:
    model = MLP(in_features=28 * 28, num_classes=10, width=8, depth=3)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_names_and_cifar_shape(batch_norm: bool) -> None:
    model = VGG(depth=11, num_classes=100, batch_norm=batch_norm, width=8)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    names = dict(model.named_parameters())
    assert "features.0.weight" in names
    assert ("features.0.bias" in names) is not batch_norm
    assert ("features.1.weight" in names) is batch_norm  # BatchNorm2d directly after conv
    assert names["classifier.weight"].shape == (100, 512 * 8 // 64)


def test_vgg_unknown_depth_is_a_user_error() -> None:
    with pytest.raises(LwlcError, match="12"):
        VGG(depth=12)


def test_vgg11_full_width_parameter_count() -> None:
    convs = [
        (3, 64),
        (64, 128),
        (128, 256),
        (256, 256),
        (256, 512),
        (512, 512),
        (512, 512),
        (512, 512),
    ]
    expected = sum(_conv_params(i, o, 3, bias=True) for i, o in convs) + 512 * 10 + 10
    assert expected == 9_225_610
    assert sum(p.numel() for p in VGG(depth=11).parameters()) == expected


def test_resnet18_full_width_parameter_count() -> None:
    bn = 2  # weight and bias per channel
    total = _conv_params(3, 64, 3, bias=False) + bn * 64
    in_planes = 64
    for planes, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block in range(2):
            s = stride if block == 0 else 1
            total += _conv_params(in_planes, planes, 3, False) + bn * planes
            total += _conv_params(planes, planes, 3, False) + bn * planes
            if s != 1 or in_planes != planes:
                total += _conv_params(in_planes, planes, 1, False) + bn * planes
            in_planes = planes
    total += 512 * 10 + 10
    assert total == 11_173_962
    assert sum(p.numel() for p in ResNet18().parameters()) == total


def test_resnet18_stage_names_and_parameter_names() -> None:
    model = ResNet18(width=4)
    names = [n for n, _ in model.stages()]
    blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert names == ["conv1", "bn1", "relu", *blocks, "avgpool", "flatten", "fc"]
    params = dict(model.named_parameters())
    for key in [
        "conv1.weight",
        "bn1.weight",
        "layer1.0.conv1.weight",
        "layer1.0.bn2.bias",
        "layer2.0.shortcut.0.weight",
        "layer2.0.shortcut.1.weight",
        "fc.weight",
    ]:
        assert key in params
    assert "layer1.0.shortcut.0.weight" not in params  # identity shortcut: same shape
    assert "layer1.0.conv1.bias" not in params  # BatchNorm provides the shift


def test_resnet18_without_norm_has_no_batchnorm_and_no_buffers() -> None:
    model = ResNet18(width=4, norm="none")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert list(model.buffers()) == []
    names = [n for n, _ in model.stages()]
    assert names[:2] == ["conv1", "relu"]
    params = dict(model.named_parameters())
    assert "layer1.0.conv1.bias" in params
    assert "layer2.0.shortcut.0.bias" in params
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_unknown_norm_is_a_user_error() -> None:
    with pytest.raises(LwlcError, match="group"):
        ResNet18(norm="group")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_initialisation_is_seeded_and_redone_by_reset_parameters(name: str) -> None:
    build = TINY_MODELS[name][0]
    torch.manual_seed(3)
    first = build()
    torch.manual_seed(3)
    second = build()
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # Re-initialising in module order under the same seed reproduces the fresh model.
    with torch.no_grad():
        for p in second.parameters():
            p.add_(1.0)
    torch.manual_seed(3)
    for module in second.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("depth", [11, 13, 16, 19])
def test_vgg_depth_counts_convolutions_plus_three(depth: int) -> None:
    # The CIFAR VGG-n keeps the n - 3 convolutions of the ImageNet VGG-n and one linear layer.
    model = VGG(depth=depth, width=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == depth - 3
