"""Checks of command-line values made before any data is read or any work is done.

Config dataclasses validate their own fields (`FeaturesConfig.validate`, ...);
this module holds what needs more than one field or the machine: NaN/inf in
options that have no config, the batch a training stage may use, a network
width that leaves layers without channels, whether the memory a network needs
exists, and whether an output's folder can be written at all.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from isl_cli.config import GanConfig, run_flags_named
from isl_cli.errors import IslError

MIN_BASE_CHANNELS = 4  # the first ResNet stage must keep at least this many channels (width >= 0.0625)


def finite_positive(option: str, value: float | int | None) -> None:
    """Refuse a value that is not a finite number > 0 (None means "not given")."""
    if value is None:
        return
    if not math.isfinite(value) or value <= 0:
        raise IslError(f"{option} must be positive and finite, got {value}")


def positive_ints(option: str, values) -> None:
    """Refuse any value of a (repeatable) integer option that is not > 0."""
    for value in values or ():
        if value <= 0:
            raise IslError(f"{option} must be positive, got {value}")


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

    finite_positive("--width", width)
    if arch == "alexnet" or not isinstance(width, (int, float)):
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
    folder = out.parent if str(out.parent) else Path(".")
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if out.is_dir():
        raise IslError(f"{option} {out}: is a folder; give a file name")
    if not folder.is_dir():
        raise IslError(f"{option} {label}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".isl-probe-", dir=folder)
    except OSError as exc:
        raise IslError(f"{option} {label}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


def features_options(cfg, *, imagenet: bool, device=None, machine: bool = True) -> None:
    """Every train-features option, checked together before any data is read (`machine`: also the memory)."""
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
    what = f"--arch {cfg.arch} --width {cfg.width:g} (weights, gradients and momentum)"
    if not machine:  # no torch yet: an impossible width is still refused at once, from a lower bound
        bound = backbone_bytes_lower_bound(cfg.arch, variant, cfg.width)
        if bound is not None:
            fits_in_memory(what, bound, estimate="at least")
        return
    needed = backbone_training_bytes(cfg.arch, variant, cfg.low_dim, cfg.width)
    fits_in_memory(what, needed, device)


def val_split_leaves_keys(val_split: float, num_images: int) -> None:
    """Refuse a --val-split that holds out every training image (the kNN would have no keys)."""
    if val_split <= 0 or num_images <= 0:
        return
    held = max(1, int(round(val_split * num_images)))
    if held >= num_images:
        raise IslError(f"--val-split {val_split:g} holds out {held} of the {num_images} training images and leaves "
                       f"none to train the kNN keys on; use at most {(num_images - 1) / num_images:.3g}")


def run_options(config, *, imagenet: bool, device=None, run_dir: Path | None = None, machine: bool = True) -> None:
    """Every option of `isl run` (all stages and the final evaluation), checked before any work.

    `machine=False` checks the options alone (no torch import, no memory estimate), so that a typo exits at once.
    """
    try:
        config.gan.validate()
    except IslError as exc:  # `isl run` names some of the GAN's options otherwise (--gan-lr, ...)
        raise IslError(run_flags_named(str(exc), GanConfig)) from None
    config.validate()
    features_options(config.features, imagenet=imagenet, device=device, machine=machine)
    training_batch(config.gan.batch_size, batch_norm=False)
    if run_dir is not None:
        writable_folder(Path(run_dir) / "summary.json", "--run-dir", shown=Path(run_dir))
