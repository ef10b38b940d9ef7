"""`isl eval-knn CHECKPOINT`: weighted kNN accuracy, top-1 and top-5; `--baseline` scores a data set's baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from isl_cli.cli.common import (
    DeviceOpt,
    EvalAmpOpt,
    EvalBatchOpt,
    EvalChannelsLastOpt,
    JsonOpt,
    QuietOpt,
    RecordedDataOpt,
    ThreadsOpt,
    compute_device,
    console,
    emit,
    err_console,
    within,
)
from isl_cli.config import EVAL_K_BOUNDS, SEED_BOUNDS, TEMPERATURE_BOUNDS
from isl_cli.errors import IslError

Opt = typer.Option


def eval_knn(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="A features artifact (from train-features); optional with --baseline and --data.", show_default=False)] = None,
    k: Annotated[Optional[list[int]], typer.Option("--k", help="Neighbours to vote; repeat for several k in one pass [200].", show_default=False, callback=within(EVAL_K_BOUNDS, "--k"))] = None,
    recompute: Annotated[bool, typer.Option("--recompute", help="Use fresh features of the un-augmented training images instead of the memory bank.")] = False,
    data: RecordedDataOpt = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="sigma of the vote weights exp(sim/sigma) \\[default: the checkpoint's T].", show_default=False, callback=within(TEMPERATURE_BOUNDS, "--temperature"))] = None,
    batch_size: EvalBatchOpt = 256,
    amp: EvalAmpOpt = "none",
    channels_last: EvalChannelsLastOpt = False,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
    baseline: Annotated[Optional[str], Opt("--baseline", help="Score a baseline instead of CHECKPOINT's features: 'pixels' (each image minus the training split's per-pixel mean, L2-normalised; data sets stored as tensors only) or 'random' (the randomly initialised backbone, features recomputed). Its data set is CHECKPOINT's or --data.", show_default=False)] = None,
    arch: Annotated[Optional[str], Opt("--arch", help="--baseline random without CHECKPOINT: resnet18, resnet50 or alexnet \\[resnet18].", show_default=False)] = None,
    width: Annotated[Optional[float], Opt("--width", help="--baseline random without CHECKPOINT: channel multiplier [1.0].", show_default=False)] = None,
    low_dim: Annotated[Optional[int], Opt("--low-dim", help="--baseline random without CHECKPOINT: feature size D [128].", show_default=False)] = None,
    variant: Annotated[Optional[str], Opt("--variant", help="--baseline random without CHECKPOINT: cifar or imagenet \\[default: from the image size].", show_default=False)] = None,
    seed: Annotated[Optional[int], Opt("--seed", help="--baseline random: the initialisation's seed, as train-features --seed \\[default: CHECKPOINT's seed, else 0].", show_default=False, callback=within(SEED_BOUNDS, "--seed"))] = None,
) -> None:
    """Weighted kNN evaluation (top-1 and top-5) of the test split against the training features: the memory bank
    by default, or recomputed features with --recompute. Several --k are evaluated in one pass.

    --baseline pixels|random scores what learned features must beat, with the same k and T: centred pixels, or the
    randomly initialised backbone (CHECKPOINT's architecture and seed: the network its round 0 started from; without
    CHECKPOINT, --data DIR with --arch/--width/--low-dim/--seed). For example:
    isl eval-knn --baseline pixels --data data/shapes;
    isl eval-knn --baseline random --data data/shapes --width 0.25 --low-dim 128.
    """
    from isl_cli.threads import apply_threads

    apply_threads(threads)

    ks = k or [200]
    if baseline is None:
        from isl_cli.engine.evaluation import evaluate_checkpoint

        _refuse_random_options(arch=arch, width=width, low_dim=low_dim, variant=variant, seed=seed,
                               why="only for --baseline random")
        if checkpoint is None:
            raise IslError("give a features CHECKPOINT to evaluate, or --baseline pixels|random with --data DIR")
        report = evaluate_checkpoint(checkpoint, ks, recompute=recompute, device=compute_device(device),
                                     data_dir=data, batch_size=batch_size, progress=not (quiet or as_json),
                                     temperature=temperature, amp=amp, channels_last=channels_last)
    else:
        report = _baseline(baseline, checkpoint, data, ks, recompute=recompute, temperature=temperature,
                           batch_size=batch_size, device=compute_device(device), progress=not (quiet or as_json),
                           arch=arch, width=width, low_dim=low_dim, variant=variant, seed=seed)
    if as_json:
        emit(json.dumps(report.to_dict(), indent=2))
        return
    if not report.scored:
        err_console.print(f"[yellow]{report.note}[/yellow]")
        return
    what = (f"{checkpoint} ({report.source} features" if baseline is None
            else f"{report.details['data']} ({_baseline_name(report)}")
    table = Table(title=f"weighted kNN: {what}, sigma {report.temperature:g})", title_justify="left")
    table.add_column("k", justify="right")
    table.add_column("top-1 %", justify="right")
    table.add_column("top-5 %", justify="right")
    for row in report.results:
        table.add_row(str(row["k"]), f"{row['top1']:.2f}", f"{row['top5']:.2f}")
    console.print(table)
    console.print(f"{report.num_test} test images against {report.num_train} training images, "
                  f"{report.seconds:.1f} s")


def _baseline_name(report) -> str:
    from isl_cli.engine.baselines import describe

    name, details = describe(report.to_dict()), report.details
    if report.source != "random":
        return name
    return f"{name} {details['arch']}, width {details['width']:g}, D {details['low_dim']}, seed {details['seed']}"


def _refuse_random_options(why: str, **given) -> None:
    typed = [f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None]
    if typed:
        raise IslError(f"{', '.join(typed)}: {why}")


def _baseline(name: str, checkpoint: Optional[Path], data: Optional[Path], ks: list[int], *, recompute: bool,
              temperature: Optional[float], batch_size: int, device, progress: bool, arch, width, low_dim, variant,
              seed):
    """Score the named baseline on CHECKPOINT's data set (and backbone) or on --data."""
    from isl_cli.artifacts import read_header
    from isl_cli.cli.common import dataset_is_imagenet
    from isl_cli.config import override, paper_features
    from isl_cli.data.store import dataset_header
    from isl_cli.engine.baselines import BASELINES, PIXELS, pixel_baseline, random_init_baseline
    from isl_cli.models.spec import BackboneSpec, resolve_spec

    if name not in BASELINES:
        raise IslError(f"--baseline must be one of {', '.join(BASELINES)}, got {name!r}")
    if recompute:
        raise IslError("--recompute applies to a checkpoint's features; a baseline is always computed from the images")
    meta, config = {}, {}
    if checkpoint is not None:
        header = read_header(checkpoint, "features")
        meta, config = header.meta, header.config
        data = data or Path(meta.get("dataset", ""))
    if data is None or not str(data):
        raise IslError("--baseline needs a data set: --data DIR, or a features CHECKPOINT that records one")
    imagenet = dataset_is_imagenet(data, variant)
    temperature = temperature or float(config.get("temperature") or paper_features(imagenet).temperature)
    if name == PIXELS:
        _refuse_random_options(arch=arch, width=width, low_dim=low_dim, variant=variant, seed=seed,
                               why="only for --baseline random")
        return pixel_baseline(data, ks, temperature, device)
    if checkpoint is not None:
        _refuse_random_options(arch=arch, width=width, low_dim=low_dim, variant=variant,
                               why="not with a CHECKPOINT, whose architecture the random baseline takes")
        spec = BackboneSpec.from_meta(meta.get("backbone", {}), str(checkpoint))
    else:
        base = override(paper_features(imagenet), arch=arch, width=width, low_dim=low_dim)
        base.validate()
        spec = resolve_spec(base.arch, base.width, base.low_dim, variant, dataset_header(data).meta)
    seed = seed if seed is not None else int(config.get("seed", 0))
    workers = int(config.get("num_workers", paper_features(imagenet).num_workers))
    return random_init_baseline(data, ks, temperature, device, spec=spec, seed=seed, batch_size=batch_size,
                                num_workers=workers, progress=progress)
