"""Backbones and GAN networks: shapes, unit norms, layer plans, parameter counts, torchvision key layout."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from isl_cli.models.alexnet import AlexNetBackbone
from isl_cli.models.gan import Discriminator, Generator
from isl_cli.models.registry import ARCHS, VARIANTS, build_backbone, input_size, num_parameters, variant_for_image_size
from isl_cli.models.resnet import CifarResNet


pytestmark = pytest.mark.usefixtures("one_thread")


def unit_rows(x: torch.Tensor) -> bool:
    return torch.allclose(x.norm(dim=1), torch.ones(x.shape[0]), atol=1e-5)


@pytest.fixture(scope="module")
def imagenet_models():
    """Each ImageNet-size backbone built once (they take ~0.2-0.6 s each on a CPU)."""
    torch.manual_seed(0)
    return {arch: build_backbone(arch, variant="imagenet", low_dim=32).eval() for arch in ARCHS}


# ---------- shapes and norms ----------
@pytest.mark.parametrize("arch", ARCHS)
def test_cifar_backbones_give_unit_rows(arch):
    width = 1.0 if arch == "alexnet" else 0.125
    model = build_backbone(arch, variant="cifar", low_dim=16, width=width)
    side = input_size(arch, "cifar")
    assert side == 32
    out = model(torch.randn(3, 3, side, side))  # training mode: batch statistics
    assert out.shape == (3, 16)
    assert unit_rows(out)
    out.sum().backward()  # gradients reach the stem
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("side", [24, 48])
def test_cifar_resnets_take_other_small_sizes(arch, side):
    model = build_backbone(arch, variant="cifar", low_dim=8, width=0.125).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, side, side))
    assert out.shape == (2, 8) and unit_rows(out)
    assert input_size(arch, "cifar", image_size=side) == side


@pytest.mark.parametrize("arch", ARCHS)
def test_imagenet_backbones_give_unit_rows(arch, imagenet_models):
    side = input_size(arch, "imagenet")
    assert side == (227 if arch == "alexnet" else 224)
    with torch.no_grad():
        out = imagenet_models[arch](torch.randn(2, 3, side, side))
    assert out.shape == (2, 32) and unit_rows(out)


def test_alexnets_reject_other_input_sizes(imagenet_models):
    with pytest.raises(ValueError, match="32x32"):
        build_backbone("alexnet", variant="cifar")(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="227x227"):
        imagenet_models["alexnet"](torch.randn(2, 3, 224, 224))
    with pytest.raises(ValueError, match="32x32"):
        input_size("alexnet", "cifar", image_size=28)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        build_backbone("resnet18", variant="cifar", width=0.125)(torch.randn(2, 1, 32, 32))


# ---------- CIFAR ResNet plan and size ----------
def basic_block_params(c_in: int, c_out: int, stride: int) -> int:
    """Two 3x3 convs (no bias) + two BNs (weight, bias) + a 1x1 projection (+BN) when the shape changes."""
    params = c_in * c_out * 9 + 2 * c_out + c_out * c_out * 9 + 2 * c_out
    if stride != 1 or c_in != c_out:
        params += c_in * c_out + 2 * c_out
    return params


def test_cifar_resnet18_parameter_count():
    stem = 3 * 64 * 9 + 2 * 64  # 3x3 conv 3->64 without bias, BN
    blocks = 0
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        blocks += basic_block_params(c_in, c_out, stride) + basic_block_params(c_out, c_out, 1)
        c_in = c_out
    head = 512 * 128 + 128
    expected = stem + blocks + head
    # Cross-check: the well-known CIFAR ResNet-18 with a 10-way classifier has 11,173,962 parameters;
    # swapping its 512->10 classifier for the 512->128 head gives 11,234,496.
    assert expected == 11_173_962 - (512 * 10 + 10) + (512 * 128 + 128) == 11_234_496
    assert num_parameters(build_backbone("resnet18", variant="cifar", low_dim=128, width=1.0)) == expected


def stage_out_channels(model: CifarResNet) -> list[int]:
    """Output channels of each stage's last block (its last batch norm)."""
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    last_norms = [getattr(stage[-1], "bn3", stage[-1].bn2) for stage in stages]
    return [norm.num_features for norm in last_norms]


def test_cifar_resnet_channel_plan_at_quarter_width():
    model = build_backbone("resnet18", variant="cifar", width=0.25)
    assert model.conv1.out_channels == 16 and model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert stage_out_channels(model) == [16, 32, 64, 128]
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [2, 2, 2, 2]
    assert isinstance(model.layer1[0], torchvision.models.resnet.BasicBlock)
    assert model.fc.in_features == 128
    deep = build_backbone("resnet50", variant="cifar", width=0.25)
    assert isinstance(deep.layer1[0], torchvision.models.resnet.Bottleneck)
    assert [len(s) for s in (deep.layer1, deep.layer2, deep.layer3, deep.layer4)] == [3, 4, 6, 3]
    assert stage_out_channels(deep) == [64, 128, 256, 512]  # 16-32-64-128 planes x 4
    assert deep.fc.in_features == 512


def test_width_validation():
    assert build_backbone("resnet18", variant="cifar", width=0.001).conv1.out_channels == 1  # at least 1
    for bad in (0, -1.0, float("nan"), float("inf"), "wide"):
        with pytest.raises(ValueError, match="width"):
            build_backbone("resnet18", variant="cifar", width=bad)
    for arch in ARCHS:
        with pytest.raises(ValueError, match="width"):
            build_backbone(arch, variant="imagenet", width=0.5)
    with pytest.raises(ValueError, match="width"):
        build_backbone("alexnet", variant="cifar", width=0.5)
    with pytest.raises(ValueError, match="low_dim"):
        build_backbone("resnet18", variant="cifar", low_dim=0)


def test_unknown_names_and_variant_choice():
    with pytest.raises(ValueError, match="architecture"):
        build_backbone("vgg16", variant="cifar")
    with pytest.raises(ValueError, match="variant"):
        build_backbone("resnet18", variant="tiny")
    assert [variant_for_image_size(s) for s in (28, 32, 64, 65, 224)] == ["cifar"] * 3 + ["imagenet"] * 2
    assert VARIANTS == ("cifar", "imagenet")
    with pytest.raises(ValueError):
        variant_for_image_size(0)


# ---------- ImageNet ResNets are torchvision's ----------
def test_imagenet_resnet18_state_dict_loads_into_torchvision(imagenet_models):
    ours = imagenet_models["resnet18"]
    assert isinstance(ours, torchvision.models.ResNet)
    reference = torchvision.models.resnet18(weights=None)
    ours_state = ours.state_dict()
    assert set(ours_state) == set(reference.state_dict())  # same names, head included
    assert ours_state["fc.weight"].shape == (32, 512)
    trunk = {name: value for name, value in ours_state.items() if not name.startswith("fc.")}
    reference.fc = nn.Identity()  # torchvision's model without its classifier
    reference.load_state_dict(trunk, strict=True)
    reference.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = reference(x)  # (2, 512): torchvision's trunk with our weights
        expected = nn.functional.normalize(nn.functional.linear(pooled, ours.fc.weight, ours.fc.bias), dim=1)
        assert torch.allclose(ours(x), expected, atol=1e-5)


def test_imagenet_resnet50_keys_match_torchvision(imagenet_models):
    ours = imagenet_models["resnet50"].state_dict()
    with torch.device("meta"):  # shapes and names only: no memory, no initialisation cost
        reference = torchvision.models.resnet50(weights=None).state_dict()
    assert set(ours) == set(reference)
    assert all(ours[n].shape == reference[n].shape for n in ours if not n.startswith("fc."))
    assert ours["fc.weight"].shape == (32, 2048)


# ---------- AlexNet layer plans ----------
def layer_plan(module: nn.Sequential) -> list[tuple]:
    plan = []
    for layer in module:
        if isinstance(layer, nn.Conv2d):
            shape = (layer.in_channels, layer.out_channels, layer.kernel_size[0], layer.stride[0], layer.padding[0])
            plan.append(("conv", *shape))
        elif isinstance(layer, nn.MaxPool2d):
            plan.append(("pool", layer.kernel_size, layer.stride))
        elif isinstance(layer, nn.Linear):
            plan.append(("linear", layer.in_features, layer.out_features))
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            plan.append(("bn", layer.num_features))
        elif isinstance(layer, nn.ReLU):
            plan.append(("relu",))
    return plan


def conv_block(c_in, c_out, kernel, stride, padding):
    return [("conv", c_in, c_out, kernel, stride, padding), ("bn", c_out), ("relu",)]


def head_plan(c_in, hidden, d):
    return [("linear", c_in, hidden), ("bn", hidden), ("relu",), ("linear", hidden, hidden), ("bn", hidden), ("relu",),
            ("linear", hidden, d)]


def pooled_sizes(model: AlexNetBackbone, side: int) -> list[int]:
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1]))
             for m in model.features if isinstance(m, nn.MaxPool2d)]
    with torch.no_grad():
        model.eval()(torch.randn(2, 3, side, side))
    for hook in hooks:
        hook.remove()
    return sizes


def test_cifar_alexnet_layer_plan():
    model = build_backbone("alexnet", variant="cifar", low_dim=128)
    assert layer_plan(model.features) == (
        conv_block(3, 64, 3, 1, 1) + [("pool", 2, 2)] + conv_block(64, 192, 3, 1, 1) + [("pool", 2, 2)]
        + conv_block(192, 384, 3, 1, 1) + conv_block(384, 256, 3, 1, 1) + conv_block(256, 256, 3, 1, 1)
        + [("pool", 2, 2)]
    )
    assert layer_plan(model.head) == head_plan(4096, 1024, 128)
    assert pooled_sizes(model, 32) == [16, 8, 4]  # 256 x 4 x 4 = 4096


def test_imagenet_alexnet_layer_plan(imagenet_models):
    model = imagenet_models["alexnet"]
    assert layer_plan(model.features) == (
        conv_block(3, 64, 11, 4, 2) + [("pool", 3, 2)] + conv_block(64, 192, 5, 1, 2) + [("pool", 3, 2)]
        + conv_block(192, 384, 3, 1, 1) + conv_block(384, 256, 3, 1, 1) + conv_block(256, 256, 3, 1, 1)
        + [("pool", 3, 2)]
    )
    assert layer_plan(model.head) == head_plan(9216, 4096, 32)
    assert pooled_sizes(model, 227) == [27, 13, 6]  # 256 x 6 x 6 = 9216


# ---------- GAN networks ----------
def linear_sizes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_generator_plan_and_unit_output():
    gen = Generator(feature_dim=128)
    assert linear_sizes(gen) == [(384, 256), (256, 128), (128, 128)]
    slopes = [m.negative_slope for m in gen.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.01, 0.01]
    a, p, n = (torch.nn.functional.normalize(torch.randn(5, 128), dim=1) for _ in range(3))
    out = gen(a, p, n)
    assert out.shape == (5, 128) and unit_rows(out)
    # the input is concat(a, p, n): swapping p and n changes the output
    assert not torch.allclose(gen(a, n, p), out)
    out.sum().backward()
    assert all(param.grad is not None for param in gen.parameters())
    with pytest.raises(ValueError, match="Generator"):
        gen(a, p, n[:4])
    with pytest.raises(ValueError, match="Generator"):
        gen(a[:, :64], p[:, :64], n[:, :64])


def test_discriminator_plan_and_probabilities():
    dis = Discriminator(feature_dim=128)
    assert linear_sizes(dis) == [(384, 128), (128, 64), (64, 1)]
    slopes = [m.negative_slope for m in dis.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.01, 0.01]
    x, y, z = (torch.randn(6, 128) * 3 for _ in range(3))
    probs = dis.score(x, y, z)
    assert probs.shape == (6, 1)
    assert torch.all((probs > 0) & (probs < 1))
    triplet = torch.cat([x, y, z], dim=1)
    assert torch.equal(dis(triplet), probs)
    assert torch.allclose(torch.sigmoid(dis.logits(triplet)), probs)
    assert torch.allclose(dis.score_logits(x, y, z), dis.logits(triplet))
    with pytest.raises(ValueError, match="Discriminator"):
        dis(torch.randn(6, 128))
    with pytest.raises(ValueError):
        Discriminator(feature_dim=1)
    assert linear_sizes(Discriminator(feature_dim=9)) == [(27, 9), (9, 4), (4, 1)]  # D/2 rounds down


@pytest.mark.parametrize("net", [Generator(16), Discriminator(16)])
def test_gan_uses_default_linear_initialisation(net):
    # nn.Linear's default: weights and biases within +-1/sqrt(fan_in) (Kaiming-uniform with a = sqrt(5))
    for layer in (m for m in net.modules() if isinstance(m, nn.Linear)):
        bound = 1 / math.sqrt(layer.in_features)
        assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
        assert layer.weight.abs().max() > 0.5 * bound  # not a zero or tiny re-initialisation
