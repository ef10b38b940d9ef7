"""Checks of command-line values made before any data is read or any work is done.

Config dataclasses validate their own fields (`FeaturesConfig.validate`, ...,
each option's range declared with it: isl_cli.bounds); this module holds what
needs more than one field, the data or the machine: the batch a training stage
may use, the images it needs, a network width that leaves layers without
channels, whether the memory a network, a bank or the negative draws need
exists, and whether an output can be written at all.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from isl_cli.config import GanConfig, run_flags_named
from isl_cli.errors import IslError
from isl_cli.paths import nearest_folder, refuse_special_output

MIN_BASE_CHANNELS = 4  # the first ResNet stage must keep at least this many channels (width >= 0.0625)
MIN_TRAINING_IMAGES = 2  # batch norm has no statistics of one image (and an epoch's batches need two)
# Bytes per negative candidate while a batch's K draws are made (triplets.draw_non_neighbors): the int64 draws,
# the int64 keys and positions of the membership test, the rejection mask, with room for the redraws.
DRAW_BYTES = 32


def world_size() -> int:
    """Ranks of a torchrun job (known from its environment before the process group exists)."""
    if "RANK" not in os.environ:
        return 1
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def training_batch(batch_size: int, *, batch_norm: bool, sync_bn: bool = True) -> None:
    """Refuse a global batch that leaves a rank without images, or batch norm with one image.

    Batch norm in training mode needs more than one value per channel: a batch of
    one image gives statistics of a single sample (and fails outright in the
    AlexNets' BatchNorm1d). Under torchrun every rank needs an image; without
    --sync-bn every rank normalises its own slice, which then needs two images.
    """
    world = world_size()
    if batch_size < world:
        raise IslError(f"--batch-size {batch_size} is the global batch, smaller than the {world} torchrun ranks: "
                       f"every rank needs at least one image (use --batch-size {world} or more)")
    if not batch_norm:
        return
    if batch_size < 2:
        raise IslError("--batch-size 1 cannot train batch norm (one image per batch has no batch statistics); "
                       "use 2 or more (the paper uses 128)")
    if not sync_bn and world > 1 and batch_size // world < 2:
        raise IslError(f"--batch-size {batch_size} over {world} ranks with --no-sync-bn leaves a rank one image "
                       f"to normalise alone; use --batch-size {2 * world} or more, or keep --sync-bn")


def backbone_width(arch: str, width: float) -> None:
    """Refuse a width multiplier that leaves a ResNet stage with (almost) no channels."""
    from isl_cli.models.names import CIFAR_STAGE_CHANNELS, scaled_channels

    if arch == "alexnet" or not isinstance(width, (int, float)) or not math.isfinite(width):
        return  # the AlexNets refuse any width but 1.0 themselves
    first = CIFAR_STAGE_CHANNELS[0]
    kept = scaled_channels(first, width)
    if kept < MIN_BASE_CHANNELS:
        raise IslError(f"--width {width} leaves the first stage {kept} of {first} channels; "
                       f"the smallest width that trains is {MIN_BASE_CHANNELS / first:g} "
                       f"({MIN_BASE_CHANNELS} channels)")


def format_bytes(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} PiB"


def available_memory(device=None) -> int | None:
    """Bytes that can still be allocated on `device` (CUDA: free memory; else the host's available RAM)."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001  (no driver information: do not guess)
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def fits_in_memory(what: str, needed: int, device=None, estimate: str = "about") -> None:
    """Refuse work whose tensors alone need more memory than `device` has free (`estimate`: about | at least)."""
    free = available_memory(device)
    if free is not None and needed > free:
        where = "GPU" if device is not None and getattr(device, "type", "") == "cuda" else "host"
        raise IslError(f"{what} needs {estimate} {format_bytes(needed)} of memory, but the {where} has "
                       f"{format_bytes(free)} free; choose a smaller size")


def backbone_bytes_lower_bound(arch: str, variant: str, width: float) -> int | None:
    """A torch-free lower bound on backbone_training_bytes for the width-scaled CIFAR ResNets (else None).

    Both depths hold at least three c x c x 3 x 3 convolutions in their last stage (c = 512 x width), each with
    its gradient and SGD momentum in fp32.
    """
    from isl_cli.models.names import CIFAR_STAGE_CHANNELS, scaled_channels

    if variant != "cifar" or arch not in ("resnet18", "resnet50"):
        return None
    c = scaled_channels(CIFAR_STAGE_CHANNELS[-1], width)
    return 3 * (3 * c * c * 9) * 4


def backbone_training_bytes(arch: str, variant: str, low_dim: int, width: float) -> int:
    """Bytes of a backbone's weights, gradients and SGD momentum, counted on the meta device (nothing allocated)."""
    import torch

    from isl_cli.models.registry import build_backbone

    try:
        with torch.device("meta"):
            model = build_backbone(arch, variant=variant, low_dim=low_dim, width=width)
    except ValueError as exc:
        raise IslError(str(exc)) from None
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return 3 * params


def writable_folder(out: Path, option: str = "--out", shown: Path | None = None) -> None:
    """Refuse an output whose folder cannot be written, before any work (nothing is left behind).

    The nearest existing folder above `out` must accept a new file: a probe file
    is created and removed there (permission bits alone do not tell for /proc,
    /sys, read-only mounts or root).
    """
    out = Path(out)
    label = shown if shown is not None else out
    folder = nearest_folder(out.parent, option, shown=label)  # refuses a dangling link or a loop on the way
    refuse_special_output(out, option)  # an existing output must be a regular file, even with --overwrite
    try:
        fd, probe = tempfile.mkstemp(prefix=".isl-probe-", dir=folder)
    except OSError as exc:
        raise IslError(f"{option} {label}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


def features_options(cfg, *, imagenet: bool, device=None, machine: bool = True, num_images: int | None = None) -> None:
    """Every train-features option, checked together before any data is read (`machine`: also the memory).

    With `num_images` (the training split's, from its header) the memory bank (N x D float32) must fit too.
    """
    from isl_cli.models.names import check_arch_variant

    cfg.validate()
    variant = "imagenet" if imagenet else "cifar"
    try:
        check_arch_variant(cfg.arch, variant)
    except ValueError as exc:
        raise IslError(f"--arch: {exc}") from None
    if variant == "cifar" and cfg.arch != "alexnet":
        backbone_width(cfg.arch, cfg.width)
    training_batch(cfg.batch_size, batch_norm=True, sync_bn=cfg.sync_bn)
    bank = 0
    what = f"--arch {cfg.arch} --width {cfg.width:g} (weights, gradients and momentum)"
    if num_images is not None:
        bank = num_images * cfg.low_dim * 4
        what = (f"--arch {cfg.arch} --width {cfg.width:g} --low-dim {cfg.low_dim} (weights, gradients, momentum "
                f"and the {num_images:,} x {cfg.low_dim} memory bank)")
    if not machine:  # no torch yet: an impossible width is still refused at once, from a lower bound
        bound = backbone_bytes_lower_bound(cfg.arch, variant, cfg.width)
        if bound is not None:
            fits_in_memory(what, bound + bank, estimate="at least")
        return
    needed = backbone_training_bytes(cfg.arch, variant, cfg.low_dim, cfg.width)
    fits_in_memory(what, needed + bank, device)


def training_set(num_images: int, val_split: float = 0.0, where: str = "the data set") -> None:
    """Refuse training on fewer than two images, or a --val-split that leaves the kNN no keys."""
    if num_images < MIN_TRAINING_IMAGES:
        raise IslError(f"{where}: its training split holds {num_images} image(s); training needs at least "
                       f"{MIN_TRAINING_IMAGES} (batch norm has no statistics of a single image)")
    val_split_leaves_keys(val_split, num_images)


def draws_fit(batch_size: int, num_draws: int, num_images: int | None = None, device=None) -> None:
    """Refuse a --num-draws whose (batch, K) negative candidates would not fit in memory (`num_images` caps the
    batch)."""
    batch = batch_size if num_images is None else min(batch_size, num_images)
    fits_in_memory(f"--num-draws {num_draws:,} for a batch of {batch:,} images (the negative candidates)",
                   batch * num_draws * DRAW_BYTES, device)


def val_split_leaves_keys(val_split: float, num_images: int) -> None:
    """Refuse a --val-split that holds out every training image (the kNN would have no keys)."""
    if val_split <= 0 or num_images <= 0:
        return
    held = max(1, int(round(val_split * num_images)))
    if held >= num_images:
        raise IslError(f"--val-split {val_split:g} holds out {held} of the {num_images} training images and leaves "
                       f"none to train the kNN keys on; use at most {(num_images - 1) / num_images:.3g}")


def run_options(config, *, imagenet: bool, device=None, run_dir: Path | None = None, machine: bool = True,
                num_images: int | None = None, data_dir: Path | None = None) -> None:
    """Every option of `isl run` (all stages and the final evaluation), checked before any work.

    `machine=False` checks the options alone (no torch import, no memory estimate), so that a typo exits at once.
    `num_images`: the prepared data set's training images (in `data_dir`), which must be trainable and whose bank
    and negative draws must fit.
    """
    try:
        config.gan.validate()
    except IslError as exc:  # `isl run` names some of the GAN's options otherwise (--gan-lr, ...)
        raise IslError(run_flags_named(str(exc), GanConfig)) from None
    config.validate()
    features_options(config.features, imagenet=imagenet, device=device, machine=machine, num_images=num_images)
    if num_images is not None:
        training_set(num_images, config.features.val_split, where=str(data_dir or "the data set"))
    training_batch(config.gan.batch_size, batch_norm=False)
    if machine:
        draws_fit(config.gan.batch_size, config.gan.num_draws, num_images, device)
        draws_fit(config.mine.batch_size, config.mine.num_draws, num_images, device)
    if run_dir is not None:
        writable_folder(Path(run_dir) / "summary.json", "--run-dir", shown=Path(run_dir))
