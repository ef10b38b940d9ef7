"""`isl run`: the whole ISL schedule in one command, resumable at any moment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from isl_cli.cli.common import (
    DeviceOpt,
    QuietOpt,
    RootOpt,
    ThreadsOpt,
    compute_device,
    console,
    dataset_is_imagenet,
    default_root,
    err_console,
)
from isl_cli.cli.options import run_options
from isl_cli import checks
from isl_cli.config import PRESET_ROUNDS, FeaturesConfig, GanConfig, MineConfig, RunConfig, override, preset_configs
from isl_cli.errors import IslError
from isl_cli.threads import THREADS_BOUNDS

Opt = typer.Option


@run_options(FeaturesConfig, GanConfig, MineConfig)
def run(
    dataset: Annotated[Optional[str], Opt("--dataset", help="Data set name (shapes, cifar10, imagefolder, ...) \\[default: the name of the --data folder, else shapes].", show_default=False)] = None,
    preset: Annotated[str, Opt("--preset", help="paper: the reference's settings for this data set, in fp32 unless --amp; quick: the fast path (--amp auto: bf16 where the CPU or GPU does it natively; --channels-last), width 0.25, 2 rounds of 16 epochs, 8 GAN epochs at Adam lr 3e-4, K = 1024, mining capped at 3 passes and stopped within a pass at the quota; the whole schedule on shapes in about 3 minutes on 2 CPU cores (a small-scale run: see the README for what it can and cannot show). cpu: the paper's schedule (4 rounds of 200 epochs, the GAN's stopping rule, the mining quota) at width 0.25 on the fast path, mining stopped after 5 empty passes; for a few thousand 32x32 images on a CPU (5,000 images: 73 minutes measured on this project's 2-core machine, 4.9 s an epoch; see docs/results.md).")] = "paper",
    rounds: Annotated[Optional[int], Opt("--rounds", help="Rounds of train-features -> train-gan -> mine-neighbors [paper: 4; quick: 2; cpu: 4].", show_default=False)] = None,
    run_dir: Annotated[Optional[Path], Opt("--run-dir", help="Folder for every artifact \\[default: runs/DATASET].", show_default=False)] = None,
    root: RootOpt = None,
    source: Annotated[Optional[Path], Opt("--source", help="Local files for fetch-data when the data set is not prepared yet.")] = None,
    data: Annotated[Optional[Path], Opt("--data", help="A prepared data set folder (from fetch-data) \\[default: ROOT/DATASET, fetched first when needed].", show_default=False)] = None,
    start_from: Annotated[Optional[Path], Opt("--start-from", help="A finished round-0 features file (made with this run's options) to adopt instead of training round 0, so that runs with different --miner compare from one round 0 (benchmarks/isl_vs_control.py).", show_default=False)] = None,
    k: Annotated[Optional[list[int]], Opt("--k", help="k of the final kNN evaluation; repeatable [200].", show_default=False)] = None,
    changes: dict[type, dict[str, Any]] = None,  # every stage's options (class -> field -> value): cli/options.py
    overwrite: Annotated[bool, Opt("--overwrite", help="Discard a run folder that holds a different config.")] = False,
    no_report: Annotated[bool, Opt("--no-report", help="Skip the PNG figures drawn at the end.")] = False,
    linear_probe: Annotated[bool, Opt("--linear-probe", help="Also report the final linear probe (isl eval-linear, pooled features) \\[default: on for --preset quick and cpu].")] = False,
    no_linear_probe: Annotated[bool, Opt("--no-linear-probe", help="Skip the final linear probe of --preset quick and cpu.")] = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
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
    dataset = dataset or (Path(data).name if data is not None else "shapes")  # a --data folder names its run
    data_dir = data or data_root / dataset
    run_dir = run_dir or Path("runs") / dataset

    def configs(imagenet: bool, device=None, machine: bool = True) -> RunConfig:
        features, gan, mine = preset_configs(preset, imagenet)
        config = RunConfig(dataset=dataset, preset=preset, rounds=PRESET_ROUNDS[preset] if rounds is None else rounds,
                           features=override(features, **changes[FeaturesConfig]),
                           gan=override(gan, **changes[GanConfig]), mine=override(mine, **changes[MineConfig]),
                           eval_ks=tuple(k or [200]))
        # every stage's options, before any data is read or any folder is made (with the machine: the data's size)
        num_images = None
        if machine:
            from isl_cli.data.store import train_size

            num_images = train_size(data_dir)
        checks.run_options(config, imagenet=imagenet, device=device, run_dir=run_dir, machine=machine,
                           num_images=num_images, data_dir=data_dir)
        return config

    prepared = (data_dir / "train.safetensors").exists()
    variant = changes[FeaturesConfig]["variant"]
    if variant is not None:
        imagenet = variant == "imagenet"
    else:
        imagenet = dataset_is_imagenet(data_dir) if prepared else dataset == "imagenet"
    if linear_probe and no_linear_probe:
        raise IslError("--linear-probe and --no-linear-probe contradict each other; give one")
    _refuse_gan_options_without_gan(changes)
    THREADS_BOUNDS.check("--threads", threads)
    configs(imagenet, machine=False)  # the options alone first, before torch is even imported: a typo exits at once
    if data is not None:  # a folder the user named must already hold a data set (never fetched under another name)
        from isl_cli.data.store import check_dataset_folder

        check_dataset_folder(data, "--data")

    from isl_cli.engine.schedule import RunJob, run_schedule
    from isl_cli.locks import acquire
    from isl_cli.threads import apply_threads

    apply_threads(threads)
    torch_device = compute_device(device)
    config = configs(imagenet, torch_device)  # then what needs the machine: memory, the device
    probe = linear_probe or (preset in ("quick", "cpu") and not no_linear_probe)
    acquire(run_dir)  # one `isl run` per run folder, after the option checks, before any work (released at exit)
    if not prepared:
        from isl_cli.data.sources.fetch import prepare_dataset

        data_dir = prepare_dataset(dataset, data_root, source=source, folder_name=data_dir.name,
                                   progress=not quiet, allow_download=False)
        config = configs(dataset_is_imagenet(data_dir, variant), torch_device)  # now with the data's size
    if start_from is not None:
        from isl_cli.engine.round0 import check_round0

        check_round0(start_from, config.features, data_dir)
    job = RunJob(config=config, data_dir=data_dir, run_dir=run_dir, device=torch_device,
                 overwrite=overwrite, progress=not quiet, resume_command=_rerun_command(),
                 linear_probe=probe, start_from=start_from)
    summary = run_schedule(job)
    print_summary(summary)
    from isl_cli import distributed

    if not no_report and distributed.context().is_main:
        from isl_cli.engine.report import write_report

        paths = write_report(run_dir, data_dir=data_dir)
        err_console.print(f"figures: {', '.join(str(p) for p in paths)}")


def _refuse_gan_options_without_gan(changes: dict[type, dict[str, Any]]) -> None:
    """With --miner similarity no GAN is trained: a typed GAN-only option would be dropped, so it is refused."""
    from isl_cli.config import RUN_SHARED_HELP, cli_options

    if changes[MineConfig].get("miner") not in ("similarity", "none"):
        return
    typed = [opt.run_flag for name, opt in cli_options(GanConfig).items()
             if changes[GanConfig].get(name) is not None and opt.run_flag not in RUN_SHARED_HELP]
    if typed:
        raise IslError(f"{', '.join(typed)}: --miner {changes[MineConfig]['miner']} trains no GAN; drop "
                       f"{'them' if len(typed) > 1 else 'it'}")


def print_summary(summary: dict) -> None:
    """The per-round table of a run."""
    table = Table(title=f"ISL run {summary['run_dir']}", title_justify="left",
                  caption="kNN top-1/top-5 % (k=200 unless said; 'final linear': the linear probe); baselines: "
                          "pixels = centred pixels, random = the random-init backbone. New pairs mined this round "
                          "(* stopped on empty passes, below the quota; the line under the table says why). "
                          "Precision % of the pairs new this round (mined), of as many pairs by plain similarity in "
                          "the same bank (similar), and chance; labels are used only for these.",
                  caption_justify="left")
    for name in ("round", "top-1", "top-5", "new", "nbrs/img", "mined", "similar", "chance", "s"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in summary["rounds"]:
        table.add_row(
            str(row["round"]), _pct(row.get("knn_top1")), _pct(row.get("knn_top5")), _count(row),
            _num(row.get("mined_neighbors_per_image")), _pct(row.get("mined_new_precision"), 100),
            _pct(row.get("mined_similarity_precision"), 100), _pct(row.get("mined_chance_precision"), 100),
            f"{row.get('seconds', 0):.0f}",
        )
    final = summary.get("final")
    if final and final.get("scored"):
        for res in final["results"]:
            table.add_row(f"final k{res['k']}", f"{res['top1']:.2f}", f"{res['top5']:.2f}", "", "", "", "", "",
                          f"{summary.get('total_seconds', 0):.0f}")
    linear = summary.get("final_linear")
    if linear and linear.get("scored"):
        table.add_row("final linear", f"{linear['top1']:.2f}", f"{linear['top5']:.2f}", "", "", "", "", "", "")
    _baseline_rows(table, summary.get("baselines", {}))
    console.print(table)
    for row in summary["rounds"]:  # a round whose mining fell short of its quota says why
        if row.get("mined_reached_quota") is False:
            err_console.print(f"[yellow]round {row['round']} mining: {row.get('mined_reason')}[/yellow]",
                              soft_wrap=True)
            if row.get("mined_rejections"):
                err_console.print(f"  {row['mined_rejections']}", soft_wrap=True)
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
                          "", "", "", "", "", "")


def _count(row: dict) -> str:
    """New pairs of a round's mining, marked * when it stopped on empty passes below the quota."""
    new = row.get("mined_new_pairs")
    return "-" if new is None else f"{new}{'*' if row.get('mined_stopped_empty') else ''}"


def _pct(value, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.2f}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _rerun_command() -> str:
    import shlex
    import sys

    return "isl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["run"] else "the same isl run command"
