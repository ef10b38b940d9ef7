"""The two baselines learned features must beat, scored by the same weighted kNN.

pixels   centred pixels: each image's flattened pixels minus the per-pixel mean
         of the TRAINING split, L2-normalised (the usual raw-pixel baseline;
         uncentred pixels are a weaker one).
random   the randomly initialised backbone of the same architecture, width and
         feature size: the network round 0 starts from (seeded exactly as
         train-features seeds it), features recomputed from un-augmented images.

Both use the weighted kNN of docs/method.md section 9 with the caller's k and T.
The pixel baseline needs a data set stored as tensors (the 32x32 sets): for a
file-backed one (ImageNet) it is refused with one line, since its images have
no common size and 224x224x3 pixels per image would not fit in memory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from isl_cli.data.store import Split
from isl_cli.models.spec import BackboneSpec
from isl_cli.engine.embedding import embed
from isl_cli.engine.features_file import load_train_test
from isl_cli.engine.evaluation import EvalReport, score_features
from isl_cli.engine.progress import make_progress
from isl_cli.precision import FP32, Precision
from isl_cli.engine.state import derive_seed
from isl_cli.errors import IslError

PIXELS = "pixels"
RANDOM = "random"
BASELINES = (PIXELS, RANDOM)
PIXEL_CHUNK = 4096  # images converted to float at a time


def pixel_mean(images: torch.Tensor, chunk: int = PIXEL_CHUNK) -> torch.Tensor:
    """Per-pixel mean of uint8 images (N, 3, H, W) as a flat (3*H*W,) float32 vector (summed in float64)."""
    if images.shape[0] == 0:
        raise ValueError("the pixel mean needs at least one image")
    total = torch.zeros(images[0].numel(), dtype=torch.float64)  # (P,)
    for start in range(0, images.shape[0], chunk):
        total += images[start:start + chunk].flatten(1).double().sum(dim=0)  # (P,)
    return (total / images.shape[0]).float()  # (P,)


def centred_pixels(images: torch.Tensor, mean: torch.Tensor, chunk: int = PIXEL_CHUNK) -> torch.Tensor:
    """(N, 3*H*W) float32 unit rows: flattened pixels minus `mean` (P,), L2-normalised.

    An image equal to the mean becomes the zero vector (it then ties with every key).
    """
    out = torch.empty(images.shape[0], mean.numel(), dtype=torch.float32)  # (N, P)
    for start in range(0, images.shape[0], chunk):
        block = images[start:start + chunk].flatten(1).float() - mean  # (c, P)
        out[start:start + chunk] = F.normalize(block, dim=1)  # (c, P)
    return out


def pixel_baseline(data_dir: Path, ks: Sequence[int], temperature: float, device: torch.device) -> EvalReport:
    """Weighted kNN of the test split's centred pixels against the training split's."""
    start = time.perf_counter()
    train, test, _ = load_train_test(data_dir)
    if train.file_backed or test.file_backed:
        raise IslError(f"{data_dir}: keeps its images as files (ImageNet-size); the centred-pixel baseline needs a "
                       "data set stored as tensors (the 32x32 sets)")
    if train.images.shape[1:] != test.images.shape[1:]:
        raise IslError(f"{data_dir}: train and test images differ in size; the pixel baseline cannot compare them")
    report = _report(data_dir, PIXELS, train, test, temperature, {"centred_on": "the training split's per-pixel mean"})
    if report.scored:
        mean = pixel_mean(train.images)  # (P,)
        keys = centred_pixels(train.images, mean)  # (N, P) on the CPU; moved to the device block by block
        queries = centred_pixels(test.images, mean).to(device)  # (Q, P)
        score_features(report, queries, test, keys, train, ks)
    report.seconds = time.perf_counter() - start
    return report


def random_backbone(spec: BackboneSpec, seed: int, device: torch.device) -> torch.nn.Module:
    """The backbone train-features starts round 0 from with this seed (eval mode); the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "backbone-init"))  # as engine.features seeds it
        model = spec.build(device)
    return model.eval()


def random_init_baseline(data_dir: Path, ks: Sequence[int], temperature: float, device: torch.device, *,
                         spec: BackboneSpec, seed: int, batch_size: int = 256, num_workers: int = 0,
                         progress: bool = True, precision: Precision = FP32) -> EvalReport:
    """Weighted kNN of a randomly initialised backbone's features (test against recomputed training features)."""
    start = time.perf_counter()
    train, test, _ = load_train_test(data_dir)
    details = {"arch": spec.arch, "variant": spec.variant, "width": spec.width, "low_dim": spec.low_dim, "seed": seed}
    report = _report(data_dir, RANDOM, train, test, temperature, details)
    if report.scored:
        model = precision.prepare(random_backbone(spec, seed, device))
        with make_progress(progress) as bar:
            queries = embed(model, test, spec, device=device, batch_size=batch_size, num_workers=num_workers,
                            progress=bar, precision=precision)  # (Q, D)
            keys = embed(model, train, spec, device=device, batch_size=batch_size, num_workers=num_workers,
                         progress=bar, precision=precision)  # (N, D)
        score_features(report, queries, test, keys, train, ks)
    report.seconds = time.perf_counter() - start
    return report


def _report(data_dir: Path, name: str, train: Split, test: Split, temperature: float,
            details: dict) -> EvalReport:
    report = EvalReport(checkpoint=None, source=name, num_train=len(train), num_test=len(test),
                        temperature=temperature, details={"data": str(data_dir), **details})
    if len(test) == 0 or not train.labelled or not test.labelled:
        report.scored = False
        report.note = "labels are unknown for this data set (an unlabelled folder), so kNN accuracy cannot be scored"
    return report


def describe(report: dict) -> str:
    """A short name of a baseline (a dict from `EvalReport.to_dict`), for tables and plots."""
    return "centred pixels" if report.get("source") == PIXELS else "random init"
