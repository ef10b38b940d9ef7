"""`isl train-gan`: the triplet GAN on frozen features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from isl_cli.cli.common import (
    AMP_HELP,
    CHANNELS_LAST_HELP,
    DeviceOpt,
    SeedOpt,
    ThreadsOpt,
    console,
    require_features,
    resume_command,
    sibling,
)
from isl_cli import checks
from isl_cli.config import given_fields, override, preset_configs

Opt = typer.Option


def train_gan(
    features: Annotated[Optional[Path], Opt("--features", help="Features checkpoint from train-features (required).", show_default=False)] = None,
    neighbors: Annotated[Optional[Path], Opt("--neighbors", help="Neighbour sets the negatives avoid \\[default: the graph the features were trained with].", show_default=False)] = None,
    data: Annotated[Optional[Path], Opt("--data", help="Data set folder \\[default: the one the features record].", show_default=False)] = None,
    init: Annotated[Optional[Path], Opt("--init", help="Continue from a previous round's GAN (weights and Adam states), as the paper's code does; a --lr given is applied over the restored Adam state.")] = None,
    out: Annotated[Optional[Path], Opt("--out", help="Output gan file \\[default: FEATURES with 'features' -> 'gan'].", show_default=False)] = None,
    epochs: Annotated[Optional[int], Opt("--epochs", help="Stop after exactly N epochs instead of the paper's rule.", show_default=False)] = None,
    max_epochs: Annotated[Optional[int], Opt("--max-epochs", help="Hard cap on epochs whatever the rule says [200].", show_default=False)] = None,
    preset: Annotated[str, Opt("--preset", help="paper (fp32 unless --amp) or quick (--amp auto, --channels-last).")] = "paper",
    amp: Annotated[Optional[str], Opt("--amp", help=AMP_HELP + " \\[paper preset: none; quick: auto].", show_default=False)] = None,
    channels_last: Annotated[bool, Opt("--channels-last", help=CHANNELS_LAST_HELP + " \\[paper preset: off; quick: on].")] = False,
    batch_size: Annotated[Optional[int], Opt("--batch-size", help="Global batch size, summed over torchrun ranks [128; 256 for ImageNet].", show_default=False)] = None,
    lr: Annotated[Optional[float], Opt("--lr", help="Adam learning rate of both networks [1e-4].", show_default=False)] = None,
    num_draws: Annotated[Optional[int], Opt("--num-draws", help="Negative candidates K drawn per image [4096].", show_default=False)] = None,
    workers: Annotated[Optional[int], Opt("--workers", help="DataLoader workers for file-backed data sets.", show_default=False)] = None,
    round_index: Annotated[Optional[int], Opt("--round", help="Round number \\[default: the features' round].", show_default=False)] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue an interrupted run from OUT.partial.safetensors.")] = False,
    overwrite: Annotated[bool, Opt("--overwrite", help="Replace an existing output or checkpoint.")] = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    quiet: Annotated[bool, Opt("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train the generator and discriminator over feature triplets (anchor, own bank row, hardest non-neighbour)
    with the backbone and bank frozen.

    Stops by the paper's rule (per-epoch generator losses), by --epochs N, or at the --max-epochs cap, and says
    which. Never needs a human to switch stages. Features with an ImageNet backbone take the ImageNet settings
    (batch 256), and the first log line says so.
    """
    from isl_cli.artifacts import read_header

    from isl_cli.device import resolve_device
    from isl_cli.engine.gan import GanJob, train_gan as run_stage
    from isl_cli.threads import apply_threads

    apply_threads(threads)

    features = require_features(features)
    imagenet = read_header(features, "features").meta.get("backbone", {}).get("variant") == "imagenet"
    preset_features, base, _ = preset_configs(preset, imagenet)
    changes = dict(batch_size=batch_size, lr=lr, num_draws=num_draws, max_epochs=max_epochs, epochs=epochs, seed=seed,
                   num_workers=workers)
    config = override(base, **changes)
    config.validate()
    checks.training_batch(config.batch_size, batch_norm=False)
    out = out or sibling(features, "gan")
    checks.writable_folder(out)
    job = GanJob(config=config, features=features, out=out,
                 device=resolve_device(device), init=init, neighbors=neighbors, resume=resume, overwrite=overwrite,
                 data_dir=data, round_index=round_index, progress=not quiet, resume_command=resume_command("train-gan"),
                 given=given_fields(**changes), amp=amp or preset_features.amp,
                 channels_last=channels_last or preset_features.channels_last)
    result = run_stage(job)
    console.print(f"[bold green]gan[/bold green] {result.out} (round {result.round}, {len(result.g_losses)} epochs, "
                  f"last g_loss {result.g_losses[-1]:.4f}): {result.stop_reason}")
