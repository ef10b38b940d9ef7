"""Backbones (32x32 and ImageNet size) and the triplet GAN."""

from isl_cli.models.alexnet import AlexNetBackbone
from isl_cli.models.gan import Discriminator, Generator
from isl_cli.models.registry import (
    ARCHS,
    VARIANTS,
    build_backbone,
    input_size,
    num_parameters,
    variant_for_image_size,
)
from isl_cli.models.resnet import CifarResNet, NormalizedLinear, imagenet_resnet

__all__ = [
    "ARCHS",
    "VARIANTS",
    "AlexNetBackbone",
    "CifarResNet",
    "Discriminator",
    "Generator",
    "NormalizedLinear",
    "build_backbone",
    "imagenet_resnet",
    "input_size",
    "num_parameters",
    "variant_for_image_size",
]
