"""`isl train-features`: the backbone and memory bank, trained with the ISL loss."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from isl_cli.cli.common import (
    DeviceOpt,
    OverwriteOpt,
    QuietOpt,
    RootOpt,
    ROUND_BOUNDS,
    ThreadsOpt,
    compute_device,
    console,
    dataset_is_imagenet,
    default_root,
    file_path,
    resume_command,
    within,
)
from isl_cli.cli.options import stage_options
from isl_cli import checks
from isl_cli.config import FeaturesConfig, given_fields, override, preset_configs

Opt = typer.Option


@stage_options(FeaturesConfig)
def train_features(
    data: Annotated[Optional[Path], Opt("--data", help="Data set folder written by fetch-data \\[default: ROOT/shapes].", show_default=False)] = None,
    root: RootOpt = None,
    init: Annotated[Optional[Path], Opt("--init", help="Continue from a previous round's features: backbone, bank, optimiser and scheduler carry over. --lr, --momentum, --weight-decay, --lr-factor and --lr-patience, when given, are applied over the restored state (and logged); the others keep it.")] = None,
    neighbors: Annotated[Optional[Path], Opt("--neighbors", help="Neighbours artifact from mine-neighbors (or made by hand). None = round 0, plain instance discrimination.")] = None,
    out: Annotated[Optional[Path], Opt("--out", help="Output features file \\[default: runs/DATASET/rR-features.safetensors].", show_default=False, parser=file_path)] = None,
    preset: Annotated[str, Opt("--preset", help="paper (the reference's settings, fp32 unless --amp) or quick (small width, few epochs, and the fast path: --amp auto and --channels-last; for a CPU).")] = "paper",
    changes: dict[str, Any] = None,  # every FeaturesConfig option (field -> typed value or None): cli/options.py
    round_index: Annotated[Optional[int], Opt("--round", help="Round number to record \\[default: neighbours' round + 1, else 0].", show_default=False, callback=within(ROUND_BOUNDS, "--round"))] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue an interrupted run of this stage from its checkpoint (OUT.partial.safetensors).")] = False,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train the backbone and memory bank: instance discrimination in round 0, the ISL loss (affinity + hard-positive
    terms over each image's neighbours) once a neighbours file is given.

    ImageNet settings (file-backed data, images over 64 px, or --variant imagenet): T 0.07, 100 epochs, batch 256,
    weight decay 1e-4, kNN every 2 epochs with k 1; the first log line says so (--variant cifar for the 32x32 ones).

    Checkpoints after every epoch; Ctrl-C saves mid-epoch and prints the command that resumes. One JSON line per
    epoch goes to OUT.metrics.jsonl.
    """
    from isl_cli.data.store import train_size
    from isl_cli.engine.features import FeaturesJob, train_features as run_stage
    from isl_cli.threads import apply_threads

    apply_threads(threads)

    data_dir = data or (root or default_root()) / "shapes"
    variant = changes["variant"]
    imagenet = dataset_is_imagenet(data_dir, variant)
    base, _, _ = preset_configs(preset, imagenet)
    config = override(base, **changes)
    torch_device = compute_device(device)
    num_images = train_size(data_dir)  # None: not prepared (the stage says so)
    checks.features_options(config, imagenet=imagenet, device=torch_device, num_images=num_images)
    if num_images is not None:
        checks.training_set(num_images, config.val_split, where=str(data_dir))
    if out is None:
        round_guess = round_index if round_index is not None else _round_of(neighbors)
        out = Path("runs") / data_dir.name / f"r{round_guess}-features.safetensors"
    checks.writable_folder(out)
    job = FeaturesJob(
        config=config, data_dir=data_dir, out=out, device=torch_device, init=init, neighbors=neighbors,
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
