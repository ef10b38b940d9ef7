"""`isl eval-knn CHECKPOINT`: weighted kNN accuracy, top-1 and top-5."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from isl_cli.cli.common import AMP_HELP, CHANNELS_LAST_HELP, DeviceOpt, JsonOpt, ThreadsOpt, console, emit, err_console


def eval_knn(
    checkpoint: Annotated[Path, typer.Argument(help="A features artifact (from train-features).", show_default=False)],
    k: Annotated[Optional[list[int]], typer.Option("--k", help="Neighbours to vote; repeat for several k in one pass [200].", show_default=False)] = None,
    recompute: Annotated[bool, typer.Option("--recompute", help="Use fresh features of the un-augmented training images instead of the memory bank.")] = False,
    data: Annotated[Optional[Path], typer.Option("--data", help="Data set folder \\[default: the one the checkpoint records].", show_default=False)] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="sigma of the vote weights exp(sim/sigma) \\[default: the checkpoint's T].", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size for computing features.")] = 256,
    amp: Annotated[str, typer.Option("--amp", help=AMP_HELP)] = "none",
    channels_last: Annotated[bool, typer.Option("--channels-last/--no-channels-last", help=CHANNELS_LAST_HELP)] = False,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Weighted kNN evaluation (top-1 and top-5) of the test split against the training features: the memory bank
    by default, or recomputed features with --recompute. Several --k are evaluated in one pass."""
    from isl_cli.device import resolve_device
    from isl_cli.engine.evaluation import evaluate_checkpoint
    from isl_cli.threads import apply_threads

    apply_threads(threads)

    ks = k or [200]
    if any(v <= 0 for v in ks):
        raise typer.BadParameter("--k must be positive")
    report = evaluate_checkpoint(checkpoint, ks, recompute=recompute, device=resolve_device(device),
                                 data_dir=data, batch_size=batch_size, progress=not (quiet or as_json),
                                 temperature=temperature, amp=amp, channels_last=channels_last)
    if as_json:
        emit(json.dumps(report.to_dict(), indent=2))
        return
    if not report.scored:
        err_console.print(f"[yellow]{report.note}[/yellow]")
        return
    table = Table(title=f"weighted kNN: {checkpoint} ({report.source} features, sigma {report.temperature:g})",
                  title_justify="left")
    table.add_column("k", justify="right")
    table.add_column("top-1 %", justify="right")
    table.add_column("top-5 %", justify="right")
    for row in report.results:
        table.add_row(str(row["k"]), f"{row['top1']:.2f}", f"{row['top5']:.2f}")
    console.print(table)
    console.print(f"{report.num_test} test images against {report.num_train} training images, "
                  f"{report.seconds:.1f} s")
