"""Backbones (32x32 and ImageNet size) and the triplet GAN."""
