"""`isl train-gan`: the triplet GAN on frozen features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from isl_cli.cli.common import (
    DeviceOpt,
    FeaturesOpt,
    OverwriteOpt,
    QuietOpt,
    RecordedDataOpt,
    RoundOpt,
    StagePresetOpt,
    ThreadsOpt,
    compute_device,
    console,
    file_path,
    require_features,
    resume_command,
    sibling,
)
from isl_cli.cli.options import StageAmpOpt, StageChannelsLastOpt, stage_options
from isl_cli import checks
from isl_cli.config import GanConfig, given_fields, override, preset_configs

Opt = typer.Option


@stage_options(GanConfig)
def train_gan(
    features: FeaturesOpt = None,
    neighbors: Annotated[Optional[Path], Opt("--neighbors", help="Neighbour sets the negatives avoid \\[default: the graph the features were trained with].", show_default=False)] = None,
    data: RecordedDataOpt = None,
    init: Annotated[Optional[Path], Opt("--init", help="Continue from a previous round's GAN (weights and Adam states), as the paper's code does; a --lr given is applied over the restored Adam state.")] = None,
    out: Annotated[Optional[Path], Opt("--out", help="Output gan file \\[default: FEATURES with 'features' -> 'gan'].", show_default=False, parser=file_path)] = None,
    preset: StagePresetOpt = "paper",
    amp: StageAmpOpt = None,
    channels_last: StageChannelsLastOpt = False,
    changes: dict[str, Any] = None,  # every GanConfig option (field -> typed value or None): cli/options.py
    round_index: RoundOpt = None,
    resume: Annotated[bool, Opt("--resume", help="Continue an interrupted run from OUT.partial.safetensors.")] = False,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train the generator and discriminator over feature triplets (anchor, own bank row, hardest non-neighbour)
    with the backbone and bank frozen.

    Stops by the paper's rule (per-epoch generator losses), by --epochs N, or at the --max-epochs cap, and says
    which. Never needs a human to switch stages. Features with an ImageNet backbone take the ImageNet settings
    (batch 256), and the first log line says so.
    """
    from isl_cli.artifacts import read_header

    from isl_cli.engine.gan import GanJob, train_gan as run_stage
    from isl_cli.threads import apply_threads

    apply_threads(threads)

    features = require_features(features)
    header = read_header(features, "features")
    imagenet = header.meta.get("backbone", {}).get("variant") == "imagenet"
    preset_features, base, _ = preset_configs(preset, imagenet)
    config = override(base, **changes)
    config.validate()
    checks.training_batch(config.batch_size, batch_norm=False)
    torch_device = compute_device(device)
    bank = header.tensors.get("bank.memory")
    checks.draws_fit(config.batch_size, config.num_draws, bank.shape[0] if bank is not None else None, torch_device)
    out = out or sibling(features, "gan")
    checks.writable_folder(out)
    job = GanJob(config=config, features=features, out=out,
                 device=torch_device, init=init, neighbors=neighbors, resume=resume, overwrite=overwrite,
                 data_dir=data, round_index=round_index, progress=not quiet, resume_command=resume_command("train-gan"),
                 given=given_fields(**changes), amp=amp or preset_features.amp,
                 channels_last=channels_last or preset_features.channels_last)
    result = run_stage(job)
    console.print(f"[bold green]gan[/bold green] {result.out} (round {result.round}, {len(result.g_losses)} epochs, "
                  f"last g_loss {result.g_losses[-1]:.4f}): {result.stop_reason}")
