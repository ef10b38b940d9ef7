"""A split's batches for a backbone, and the features of its un-augmented images."""

from __future__ import annotations

import torch

from isl_cli import distributed
from isl_cli.data.batches import make_batch_source
from isl_cli.data.store import Split
from isl_cli.models.spec import BackboneSpec
from isl_cli.precision import FP32, Precision


def batch_source(split: Split, spec: BackboneSpec, *, train: bool, batch_size: int, device: torch.device,
                 num_workers: int, subset: torch.Tensor | None = None):
    """The batches of a split for this backbone (augmented for training)."""
    return make_batch_source(split, train=train, batch_size=batch_size, device=device, output_size=spec.image_size,
                             mean=spec.mean, std=spec.std, imagenet_style=spec.variant == "imagenet",
                             num_workers=num_workers, subset=subset)


@torch.no_grad()
def embed(model: torch.nn.Module, split: Split, spec: BackboneSpec, *, device: torch.device, batch_size: int = 256,
          num_workers: int = 0, subset: torch.Tensor | None = None, progress=None,
          precision: Precision = FP32) -> torch.Tensor:
    """Features of un-augmented images, backbone in eval mode: (n, D) float32 on `device`."""
    was_training = model.training
    model.eval()
    source = batch_source(split, spec, train=False, batch_size=batch_size, device=device,
                          num_workers=num_workers, subset=subset)
    task = progress.add_task("embed", total=source.num_batches(), stats="") if progress is not None else None
    chunks = [torch.zeros(0, spec.low_dim, device=device)]
    for _, images in source.batches(None):
        chunks.append(precision.forward(model, images))  # (b, D)
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    model.train(was_training)
    return distributed.all_gather_cat(torch.cat(chunks))  # (n, D): every rank's slices, in order
