"""The trained GAN as the miner uses it: both networks loaded from a gan artifact, frozen, checked against the
features it must have been trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from isl_cli.artifacts import fingerprint_tensors
from isl_cli.checkpoints import load_gan
from isl_cli.errors import IslError
from isl_cli.models.gan import Discriminator, Generator
from isl_cli.models.spec import load_module


def open_frozen_gan(path: Path, features: Path, loaded: Any, device: torch.device
                    ) -> tuple[Generator, Discriminator, str]:
    """Generator and discriminator of a finished GAN trained on `loaded` features, in eval mode, and a fingerprint
    of their weights (what a mining checkpoint must have been made with)."""
    meta = loaded.artifact.meta
    gan = load_gan(path, fingerprint=loaded.fingerprint, device=device)
    if gan.meta.get("features_id") != meta.get("features_id"):
        raise IslError(f"{path}: was trained on other features than {features} "
                       f"(features id {gan.meta.get('features_id')} vs {meta.get('features_id')}); "
                       "run train-gan on these features first")
    if not gan.meta.get("complete", True):
        raise IslError(f"{path}: is an unfinished checkpoint; finish train-gan first (--resume)")
    dim = loaded.spec.low_dim
    generator, discriminator = Generator(dim).to(device), Discriminator(dim).to(device)
    load_module(generator, gan.with_prefix("generator."), str(path))
    load_module(discriminator, gan.with_prefix("discriminator."), str(path))
    gan_id = fingerprint_tensors(*(gan[k].reshape(-1) for k in sorted(gan.tensors)
                                   if k.startswith(("generator.", "discriminator."))))
    return generator.eval(), discriminator.eval(), gan_id
