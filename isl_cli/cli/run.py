"""`isl run`: the whole ISL schedule in one command, resumable at any moment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from isl_cli.cli.common import (
    AMP_HELP,
    CHANNELS_LAST_HELP,
    DeviceOpt,
    RootOpt,
    ThreadsOpt,
    console,
    dataset_is_imagenet,
    default_root,
    err_console,
)
from isl_cli import checks
from isl_cli.config import PRESET_ROUNDS, RunConfig, override, preset_configs
from isl_cli.errors import IslError

Opt = typer.Option


def run(
    dataset: Annotated[str, Opt("--dataset", help="Data set name (shapes, cifar10, imagefolder, ...).")] = "shapes",
    preset: Annotated[str, Opt("--preset", help="paper: the reference's settings for this data set, in fp32 unless --amp; quick: the fast path (--amp auto: bf16 where the CPU or GPU does it natively; --channels-last), width 0.25, 2 rounds of 16 epochs, 8 GAN epochs at Adam lr 3e-4, K = 1024, mining capped at 3 passes and stopped within a pass at the quota; the whole schedule on shapes in about 3 minutes on 2 CPU cores (a small-scale run: see the README for what it can and cannot show).")] = "paper",
    rounds: Annotated[Optional[int], Opt("--rounds", help="Rounds of train-features -> train-gan -> mine-neighbors [paper: 4; quick: 2].", show_default=False)] = None,
    run_dir: Annotated[Optional[Path], Opt("--run-dir", help="Folder for every artifact \\[default: runs/DATASET].", show_default=False)] = None,
    root: RootOpt = None,
    source: Annotated[Optional[Path], Opt("--source", help="Local files for fetch-data when the data set is not prepared yet.")] = None,
    data: Annotated[Optional[Path], Opt("--data", help="A prepared data set folder \\[default: ROOT/DATASET].", show_default=False)] = None,
    k: Annotated[Optional[list[int]], Opt("--k", help="k of the final kNN evaluation; repeatable [200].", show_default=False)] = None,
    # feature stage
    epochs: Annotated[Optional[int], Opt("--epochs", help="train-features epochs per round.", show_default=False)] = None,
    arch: Annotated[Optional[str], Opt("--arch", help="resnet18, resnet50 or alexnet.", show_default=False)] = None,
    variant: Annotated[Optional[str], Opt("--variant", help="cifar or imagenet backbones and settings; picked from the data unless given (file-backed or over 64 px: ImageNet settings).", show_default=False)] = None,
    width: Annotated[Optional[float], Opt("--width", help="ResNet channel multiplier.", show_default=False)] = None,
    low_dim: Annotated[Optional[int], Opt("--low-dim", help="Feature size D.", show_default=False)] = None,
    batch_size: Annotated[Optional[int], Opt("--batch-size", help="Global batch size of every stage (summed over torchrun ranks).", show_default=False)] = None,
    lr: Annotated[Optional[float], Opt("--lr", help="SGD learning rate.", show_default=False)] = None,
    weight_decay: Annotated[Optional[float], Opt("--weight-decay", help="SGD weight decay [5e-4; 1e-4 for ImageNet].", show_default=False)] = None,
    temperature: Annotated[Optional[float], Opt("--temperature", help="Softmax temperature T [0.1; 0.07 for ImageNet].", show_default=False)] = None,
    hp_weight: Annotated[Optional[float], Opt("--hp-weight", help="Weight of the hard-positive KL term [0.5].", show_default=False)] = None,
    eval_every: Annotated[Optional[int], Opt("--eval-every", help="kNN evaluation (and LR plateau step) every N epochs [5].", show_default=False)] = None,
    eval_k: Annotated[Optional[int], Opt("--eval-k", help="k of the kNN during training [200; 1 for ImageNet].", show_default=False)] = None,
    val_split: Annotated[Optional[float], Opt("--val-split", help="Share of the training images whose kNN drives the LR scheduler (default: the test set, as the paper's code). They are still trained on; only their labels leave the kNN's keys.", show_default=False)] = None,
    amp: Annotated[Optional[str], Opt("--amp", help=AMP_HELP + " Applies to every stage's backbone \\[paper preset: none; quick: auto].", show_default=False)] = None,
    channels_last: Annotated[bool, Opt("--channels-last", help=CHANNELS_LAST_HELP + " Every stage \\[paper preset: off; quick: on].")] = False,
    # gan stage
    gan_epochs: Annotated[Optional[int], Opt("--gan-epochs", help="Fixed GAN epochs per round (instead of the paper's rule).", show_default=False)] = None,
    gan_max_epochs: Annotated[Optional[int], Opt("--gan-max-epochs", help="Hard cap on GAN epochs.", show_default=False)] = None,
    gan_lr: Annotated[Optional[float], Opt("--gan-lr", help="Adam learning rate of the GAN [1e-4].", show_default=False)] = None,
    num_draws: Annotated[Optional[int], Opt("--num-draws", help="Negative candidates K (GAN and mining).", show_default=False)] = None,
    # mining stage
    tau: Annotated[Optional[float], Opt("--tau", help="Mining score threshold [0.5; 0.3 for ImageNet].", show_default=False)] = None,
    base_radius: Annotated[Optional[float], Opt("--base-radius", help="Mining radius R [0.6; 0.3 for ImageNet].", show_default=False)] = None,
    top_k: Annotated[Optional[int], Opt("--top-k", help="Bank rows nearest each proxy that may join [10].", show_default=False)] = None,
    per_round: Annotated[Optional[float], Opt("--per-round", help="Mining quota: (round+1) x this x N entries [0.5].", show_default=False)] = None,
    max_passes: Annotated[Optional[int], Opt("--max-passes", help="Cap on mining passes per round [200].", show_default=False)] = None,
    quota_check: Annotated[Optional[str], Opt("--quota-check", help="pass (the method) or batch: see `isl mine-neighbors --help`.", show_default=False)] = None,
    workers: Annotated[Optional[int], Opt("--workers", help="DataLoader workers for file-backed data sets.", show_default=False)] = None,
    seed: Annotated[int, Opt("--seed", help="Seed of every stage; the same seed on CPU gives the same result.")] = 0,
    overwrite: Annotated[bool, Opt("--overwrite", help="Discard a run folder that holds a different config.")] = False,
    no_report: Annotated[bool, Opt("--no-report", help="Skip the PNG figures drawn at the end.")] = False,
    linear_probe: Annotated[bool, Opt("--linear-probe", help="Also report the final linear probe (isl eval-linear, pooled features) \\[default: on for --preset quick].")] = False,
    no_linear_probe: Annotated[bool, Opt("--no-linear-probe", help="Skip the final linear probe of --preset quick.")] = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    quiet: Annotated[bool, Opt("--quiet", help="No progress bars.")] = False,
) -> None:
    """Run the whole ISL schedule unattended: for each round train-features, train-gan, mine-neighbors (the last round
    stops after train-features: the paper's code also mines after it, but nothing uses those neighbours), then
    eval-knn with recomputed features (and eval-linear with --linear-probe, the default for --preset quick), a table
    per round, summary.json and the report's figures.

    Run the same command again to continue after any interruption (even a kill): finished stages are skipped and an
    interrupted one resumes from its checkpoint. A run folder holding a different config is refused unless
    --overwrite. The data set is fetched first when that needs no network (shapes, or --source).

    File-backed data sets and images over 64 px take the reference's ImageNet settings (T 0.07, 100 epochs a round,
    batch 256 in every stage, weight decay 1e-4, kNN every 2 epochs with k 1, tau = R = 0.3); the log and the summary
    say so, and --variant cifar keeps the 32x32 ones.
    """
    data_root = root or default_root()
    data_dir = data or data_root / dataset
    run_dir = run_dir or Path("runs") / dataset

    def configs(imagenet: bool, device=None, machine: bool = True) -> RunConfig:
        features, gan, mine = preset_configs(preset, imagenet)
        features = override(features, epochs=epochs, arch=arch, width=width, low_dim=low_dim, batch_size=batch_size,
                            lr=lr, weight_decay=weight_decay, temperature=temperature, hp_weight=hp_weight,
                            eval_every=eval_every, eval_k=eval_k, val_split=val_split, num_workers=workers,
                            seed=seed, amp=amp, channels_last=channels_last or None, variant=variant)
        gan = override(gan, epochs=gan_epochs, max_epochs=gan_max_epochs, lr=gan_lr, num_draws=num_draws,
                       batch_size=batch_size, num_workers=workers, seed=seed)
        mine = override(mine, tau=tau, base_radius=base_radius, top_k=top_k, per_round=per_round,
                        max_passes=max_passes, quota_check=quota_check, num_draws=num_draws, batch_size=batch_size,
                        num_workers=workers, seed=seed)
        config = RunConfig(dataset=dataset, preset=preset, rounds=PRESET_ROUNDS[preset] if rounds is None else rounds,
                           features=features, gan=gan, mine=mine,
                           eval_ks=tuple(k or [200]))
        # every stage's options, before any data is read or any folder is made
        checks.run_options(config, imagenet=imagenet, device=device, run_dir=run_dir, machine=machine)
        return config

    prepared = (data_dir / "train.safetensors").exists()
    if variant is not None:
        imagenet = variant == "imagenet"
    else:
        imagenet = dataset_is_imagenet(data_dir) if prepared else dataset == "imagenet"
    if linear_probe and no_linear_probe:
        raise IslError("--linear-probe and --no-linear-probe contradict each other; give one")
    checks.finite_positive("--threads", threads)
    configs(imagenet, machine=False)  # the options alone first, before torch is even imported: a typo exits at once

    from isl_cli.device import resolve_device
    from isl_cli.engine.schedule import RunJob, run_schedule
    from isl_cli.locks import acquire
    from isl_cli.threads import apply_threads

    apply_threads(threads)
    compute_device = resolve_device(device)
    config = configs(imagenet, compute_device)  # then what needs the machine: memory, the device
    probe = linear_probe or (preset == "quick" and not no_linear_probe)
    acquire(run_dir)  # one `isl run` per run folder, after the option checks, before any work (released at exit)
    if not prepared:
        from isl_cli.data.sources.fetch import prepare_dataset

        data_dir = prepare_dataset(dataset, data_root, source=source, folder_name=data_dir.name,
                                   progress=not quiet, allow_download=False)
        if dataset_is_imagenet(data_dir, variant) != imagenet:
            config = configs(not imagenet, compute_device)
    job = RunJob(config=config, data_dir=data_dir, run_dir=run_dir, device=compute_device,
                 overwrite=overwrite, progress=not quiet, resume_command=_rerun_command(),
                 linear_probe=probe)
    summary = run_schedule(job)
    print_summary(summary)
    from isl_cli import distributed

    if not no_report and distributed.context().is_main:
        from isl_cli.engine.report import write_report

        paths = write_report(run_dir, data_dir=data_dir)
        err_console.print(f"figures: {', '.join(str(p) for p in paths)}")


def print_summary(summary: dict) -> None:
    """The per-round table of a run."""
    table = Table(title=f"ISL run {summary['run_dir']}", title_justify="left",
                  caption="kNN top-1/top-5 % (k=200 unless said; 'final linear': the linear probe); baselines: "
                          "pixels = centred pixels, random = the random-init backbone. Precision % of the pairs new "
                          "this round (mined), of as many pairs by plain similarity in the same bank (similar), and "
                          "chance; labels are used only for these.",
                  caption_justify="left")
    for name in ("round", "top-1", "top-5", "nbrs/img", "mined", "similar", "chance", "s"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in summary["rounds"]:
        table.add_row(
            str(row["round"]), _pct(row.get("knn_top1")), _pct(row.get("knn_top5")),
            _num(row.get("mined_neighbors_per_image")), _pct(row.get("mined_new_precision"), 100),
            _pct(row.get("mined_similarity_precision"), 100), _pct(row.get("mined_chance_precision"), 100),
            f"{row.get('seconds', 0):.0f}",
        )
    final = summary.get("final")
    if final and final.get("scored"):
        for res in final["results"]:
            table.add_row(f"final k{res['k']}", f"{res['top1']:.2f}", f"{res['top5']:.2f}", "", "", "", "",
                          f"{summary.get('total_seconds', 0):.0f}")
    linear = summary.get("final_linear")
    if linear and linear.get("scored"):
        table.add_row("final linear", f"{linear['top1']:.2f}", f"{linear['top5']:.2f}", "", "", "", "", "")
    _baseline_rows(table, summary.get("baselines", {}))
    console.print(table)
    if summary.get("settings_note"):
        err_console.print(summary["settings_note"], soft_wrap=True)
    if final and not final.get("scored"):
        err_console.print(f"[yellow]{final.get('note')}[/yellow]")


def _baseline_rows(table: Table, baselines: dict) -> None:
    """One row per baseline and k (recomputed features, like the final row); a line when one was not scored."""
    for key in ("pixels", "random"):
        report = baselines.get(key)
        if not report:
            continue
        if not report.get("scored"):
            err_console.print(f"[yellow]baseline {key}: {report.get('note')}[/yellow]")
            continue
        for res in report["results"]:
            table.add_row(f"{key} k{res['k']}", f"{res['top1']:.2f}", f"{res['top5']:.2f}",
                          "", "", "", "", "")


def _pct(value, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.2f}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _rerun_command() -> str:
    import shlex
    import sys

    return "isl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["run"] else "the same isl run command"
