"""`isl train-features`: the backbone and memory bank, trained with the ISL loss."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from isl_cli.cli.common import (
    AMP_HELP,
    CHANNELS_LAST_HELP,
    DeviceOpt,
    RootOpt,
    SeedOpt,
    ThreadsOpt,
    console,
    dataset_is_imagenet,
    default_root,
    resume_command,
)
from isl_cli import checks
from isl_cli.config import given_fields, override, preset_configs

Opt = typer.Option


def train_features(
    data: Annotated[Optional[Path], Opt("--data", help="Data set folder written by fetch-data \\[default: ROOT/shapes].", show_default=False)] = None,
    root: RootOpt = None,
    init: Annotated[Optional[Path], Opt("--init", help="Continue from a previous round's features: backbone, bank, optimiser and scheduler carry over. --lr, --momentum, --weight-decay, --lr-factor and --lr-patience, when given, are applied over the restored state (and logged); the others keep it.")] = None,
    neighbors: Annotated[Optional[Path], Opt("--neighbors", help="Neighbours artifact from mine-neighbors (or made by hand). None = round 0, plain instance discrimination.")] = None,
    out: Annotated[Optional[Path], Opt("--out", help="Output features file \\[default: runs/DATASET/rR-features.safetensors].", show_default=False)] = None,
    epochs: Annotated[Optional[int], Opt("--epochs", help="Epochs of this stage \\[paper: 200; 100 for ImageNet].", show_default=False)] = None,
    preset: Annotated[str, Opt("--preset", help="paper (the reference's settings, fp32 unless --amp) or quick (small width, few epochs, and the fast path: --amp auto and --channels-last; for a CPU).")] = "paper",
    arch: Annotated[Optional[str], Opt("--arch", help="resnet18, resnet50 or alexnet \\[default: resnet18].", show_default=False)] = None,
    width: Annotated[Optional[float], Opt("--width", help="Channel multiplier of the ResNets (1.0 = paper; 0.25 suits a CPU).", show_default=False)] = None,
    low_dim: Annotated[Optional[int], Opt("--low-dim", help="Feature size D \\[default: 128].", show_default=False)] = None,
    variant: Annotated[Optional[str], Opt("--variant", help="cifar (32x32 backbones) or imagenet; picked from the data unless given. File-backed data and images over 64 px take the ImageNet settings (T 0.07, 100 epochs, batch 256, weight decay 1e-4, kNN every 2 epochs with k 1), and the log's first line says so; --variant cifar keeps the 32x32 ones.", show_default=False)] = None,
    batch_size: Annotated[Optional[int], Opt("--batch-size", help="Global batch size, summed over torchrun ranks \\[paper: 128; 256 for ImageNet].", show_default=False)] = None,
    lr: Annotated[Optional[float], Opt("--lr", help="SGD learning rate \\[paper: 0.03].", show_default=False)] = None,
    momentum: Annotated[Optional[float], Opt("--momentum", help="SGD momentum [0.9].", show_default=False)] = None,
    weight_decay: Annotated[Optional[float], Opt("--weight-decay", help="Weight decay [5e-4; 1e-4 for ImageNet].", show_default=False)] = None,
    temperature: Annotated[Optional[float], Opt("--temperature", help="Softmax temperature T [0.1; 0.07 for ImageNet].", show_default=False)] = None,
    bank_momentum: Annotated[Optional[float], Opt("--bank-momentum", help="Memory bank momentum m [0.5].", show_default=False)] = None,
    hp_weight: Annotated[Optional[float], Opt("--hp-weight", help="Weight of the hard-positive KL term [0.5].", show_default=False)] = None,
    lr_factor: Annotated[Optional[float], Opt("--lr-factor", help="LR plateau cut factor [0.8].", show_default=False)] = None,
    lr_patience: Annotated[Optional[int], Opt("--lr-patience", help="Evaluations without improvement before the LR is cut [1].", show_default=False)] = None,
    eval_every: Annotated[Optional[int], Opt("--eval-every", help="kNN evaluation (and LR plateau step) every N epochs [5; 2 for ImageNet].", show_default=False)] = None,
    eval_k: Annotated[Optional[int], Opt("--eval-k", help="k of the kNN during training [200; 1 for ImageNet].", show_default=False)] = None,
    val_split: Annotated[Optional[float], Opt("--val-split", help="The kNN that drives the LR scheduler queries this fraction of the TRAINING images instead of the test set. The held-out images are still trained on (no labels are used in training); only their labels leave the kNN's keys. Default 0: like the paper's code, the scheduler watches test-set kNN (tuning on the test set; use this option for an honest protocol).", show_default=False)] = None,
    workers: Annotated[Optional[int], Opt("--workers", help="DataLoader workers for file-backed data sets (ImageNet).", show_default=False)] = None,
    amp: Annotated[Optional[str], Opt("--amp", help=AMP_HELP + " \\[paper preset: none; quick: auto].", show_default=False)] = None,
    channels_last: Annotated[bool, Opt("--channels-last", help=CHANNELS_LAST_HELP + " \\[paper preset: off; quick: on].")] = False,
    no_sync_bn: Annotated[bool, Opt("--no-sync-bn", help="Under torchrun: batch norm per rank instead of over the global batch.")] = False,
    round_index: Annotated[Optional[int], Opt("--round", help="Round number to record \\[default: neighbours' round + 1, else 0].", show_default=False)] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue an interrupted run of this stage from its checkpoint (OUT.partial.safetensors).")] = False,
    overwrite: Annotated[bool, Opt("--overwrite", help="Replace an existing output or checkpoint.")] = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    quiet: Annotated[bool, Opt("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train the backbone and memory bank: instance discrimination in round 0, the ISL loss (affinity + hard-positive
    terms over each image's neighbours) once a neighbours file is given.

    ImageNet settings (file-backed data, images over 64 px, or --variant imagenet): T 0.07, 100 epochs, batch 256,
    weight decay 1e-4, kNN every 2 epochs with k 1; the first log line says so (--variant cifar for the 32x32 ones).

    Checkpoints after every epoch; Ctrl-C saves mid-epoch and prints the command that resumes. One JSON line per
    epoch goes to OUT.metrics.jsonl.
    """
    from isl_cli.device import resolve_device
    from isl_cli.engine.features import FeaturesJob, train_features as run_stage
    from isl_cli.threads import apply_threads

    apply_threads(threads)

    data_dir = data or (root or default_root()) / "shapes"
    imagenet = dataset_is_imagenet(data_dir, variant)
    base, _, _ = preset_configs(preset, imagenet)
    changes = dict(
        arch=arch, width=width, low_dim=low_dim, epochs=epochs, batch_size=batch_size, lr=lr,
        momentum=momentum, weight_decay=weight_decay, temperature=temperature, bank_momentum=bank_momentum,
        hp_weight=hp_weight, eval_every=eval_every, eval_k=eval_k, val_split=val_split, num_workers=workers,
        seed=seed, variant=variant, amp=amp, channels_last=channels_last or None, sync_bn=False if no_sync_bn else None,
        lr_factor=lr_factor, lr_patience=lr_patience,
    )
    config = override(base, **changes)
    compute_device = resolve_device(device)
    checks.features_options(config, imagenet=imagenet, device=compute_device)
    if out is None:
        round_guess = round_index if round_index is not None else _round_of(neighbors)
        out = Path("runs") / data_dir.name / f"r{round_guess}-features.safetensors"
    checks.writable_folder(out)
    job = FeaturesJob(
        config=config, data_dir=data_dir, out=out, device=compute_device, init=init, neighbors=neighbors,
        resume=resume, overwrite=overwrite, round_index=round_index, variant=variant, progress=not quiet,
        resume_command=resume_command("train-features"), given=given_fields(**changes),
    )
    result = run_stage(job)
    last = result.last
    summary = f"[bold green]features[/bold green] {result.out} (round {result.round}"
    if "knn_top1" in last:
        summary += f", kNN top-1 {last['knn_top1']:.2f}% on {last['knn_on']}"
    console.print(summary + ")")


def _round_of(neighbors: Path | None) -> int:
    from isl_cli.artifacts import read_header

    if neighbors is None or not Path(neighbors).exists():
        return 0
    return int(read_header(neighbors, "neighbors").meta.get("round", 0)) + 1
