"""`isl export CHECKPOINT`: the backbone or the embeddings, for use elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from isl_cli.cli.common import (
    DeviceOpt,
    EvalBatchOpt,
    JsonOpt,
    RecordedDataOpt,
    ThreadsOpt,
    compute_device,
    console,
    emit,
    file_path,
)
from isl_cli.config import AMP_HELP, CHANNELS_LAST_HELP

Opt = typer.Option
SUFFIX_FORMATS = {".safetensors": "safetensors", ".onnx": "onnx", ".npy": "npy"}


def export(
    checkpoint: Annotated[Path, typer.Argument(help="A features artifact (from train-features or isl run).", show_default=False)],
    what: Annotated[str, Opt("--what", help="backbone (weights + architecture + normalisation) or embeddings (N x D features of a split).")] = "backbone",
    out: Annotated[Optional[Path], Opt("--out", help="Output file (required).", show_default=False, parser=file_path)] = None,
    fmt: Annotated[Optional[str], Opt("--format", help="backbone: safetensors or onnx (needs the onnx extra); embeddings: safetensors or npy (three files: OUT, OUT.labels.npy, OUT.indices.npy) \\[default: from OUT's suffix].", show_default=False)] = None,
    split: Annotated[str, Opt("--split", help="embeddings: train or test (un-augmented images).")] = "test",
    batch_size: EvalBatchOpt = 256,
    data: RecordedDataOpt = None,
    overwrite: Annotated[bool, Opt("--overwrite", help="Replace an existing output file (never the checkpoint or a data set split it reads).")] = False,
    amp: Annotated[str, Opt("--amp", help="embeddings: " + AMP_HELP)] = "none",
    channels_last: Annotated[bool, Opt("--channels-last", help="embeddings: " + CHANNELS_LAST_HELP)] = False,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
) -> None:
    """Export the backbone (safetensors with architecture and normalisation in the metadata, loadable with
    `isl_cli.backbone_file.load_backbone(PATH)`; ImageNet ResNet keys load into torchvision's resnet18/50 except
    the head; or ONNX) or the embeddings of a data set split (safetensors or .npy).

    The format follows OUT's suffix (.safetensors, .onnx, .npy); any other suffix needs --format. An existing OUT
    is replaced only with --overwrite, and never when it is the checkpoint or a data set split being read.
    """
    from isl_cli.artifacts import check_io, refuse_existing
    from isl_cli.engine.features_file import features_inputs
    from isl_cli.engine.export import export_backbone, export_embeddings, npy_paths
    from isl_cli.errors import IslError
    from isl_cli.locks import holding

    from isl_cli import checks
    from isl_cli.threads import apply_threads

    apply_threads(threads)

    if out is None:
        raise IslError("--out is required: where to write the export")
    checks.writable_folder(out)
    if what not in ("backbone", "embeddings"):
        raise IslError(f"--what must be backbone or embeddings, got {what!r}")
    if fmt is None:
        fmt = SUFFIX_FORMATS.get(out.suffix)
        if fmt is None:
            raise IslError(f"--out {out}: unknown suffix {out.suffix or '(none)'!r}; name it .safetensors, .onnx or "
                           ".npy, or choose the format with --format")
    outputs = list(npy_paths(out).values()) if fmt == "npy" else [out]
    check_io(outputs, features_inputs(checkpoint, data))
    for path in outputs:
        refuse_existing(path, overwrite)
    with holding(out):
        if what == "backbone":
            info = export_backbone(checkpoint, out, fmt, compute_device(device), data_dir=data)
        else:
            info = export_embeddings(checkpoint, out, split, fmt, compute_device(device), batch_size=batch_size,
                                     data_dir=data, amp=amp, channels_last=channels_last)
    if as_json:
        emit(json.dumps({"out": str(out), "what": what, **info}, indent=2))
    else:
        console.print(f"[bold green]exported[/bold green] {what} -> {out} ({fmt})")
