"""`isl eval-linear CHECKPOINT`: the linear probe, top-1 and top-5."""

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
    SeedOpt,
    ThreadsOpt,
    compute_device,
    console,
    emit,
)


def eval_linear(
    checkpoint: Annotated[Path, typer.Argument(help="A features artifact (train-features) or an exported backbone (isl export --what backbone).", show_default=False)],
    data: Annotated[Optional[Path], typer.Option("--data", help="Data set folder \\[default: the one a features file records; required for an exported backbone].", show_default=False)] = None,
    layer: Annotated[str, typer.Option("--layer", help="pooled: the backbone's features before its final linear-to-D layer (what linear probes report); embedding: the D-dim unit-norm output.")] = "pooled",
    batch_size: EvalBatchOpt = 256,
    seed: SeedOpt = 0,
    amp: EvalAmpOpt = "none",
    channels_last: EvalChannelsLastOpt = False,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Linear probe of frozen features: multinomial logistic regression on the standardised features of the
    un-augmented training images, its weight decay chosen among 1e-5..1e-1 on a held-out 20% of the TRAINING split
    (never the test split), then refitted on all training images; top-1 and top-5 on the test split.
    Uses the labels (a diagnostic, as every accuracy). Refuses a data set without labels."""
    from isl_cli.engine.linear_eval import evaluate_linear
    from isl_cli.threads import apply_threads

    apply_threads(threads)
    report = evaluate_linear(checkpoint, layer=layer, device=compute_device(device), data_dir=data,
                             batch_size=batch_size, seed=seed, progress=not (quiet or as_json), amp=amp,
                             channels_last=channels_last)
    if as_json:
        emit(json.dumps(report.to_dict(), indent=2))
        return
    table = Table(title=f"linear probe: {checkpoint} ({report.layer} features, {report.dim}-d)", title_justify="left")
    table.add_column("weight decay", justify="right")
    table.add_column("held-out top-1 %", justify="right")
    for row in report.sweep:
        chosen = " (chosen)" if row["weight_decay"] == report.weight_decay else ""
        table.add_row(f"{row['weight_decay']:g}{chosen}", f"{row['val_top1']:.2f}")
    console.print(table)
    console.print(f"[bold]test top-1 {report.top1:.2f}%, top-5 {report.top5:.2f}%[/bold] "
                  f"({report.num_classes} classes; trained on {report.num_train} training images with weight decay "
                  f"{report.weight_decay:g}, chosen on {report.num_val} held-out training images; "
                  f"{report.num_test} test images; {report.solver}, {report.seconds:.1f} s)")
