"""Exports of a features checkpoint: the backbone (safetensors or ONNX) or embeddings."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isl_cli.artifacts import atomic_write, write_artifact
from isl_cli.data.store import load_split
from isl_cli.engine.embedding import embed
from isl_cli.engine.features_file import open_features
from isl_cli.engine.progress import log
from isl_cli.errors import IslError
from isl_cli.precision import resolve

BACKBONE_FORMATS = ("safetensors", "onnx")
EMBEDDING_FORMATS = ("safetensors", "npy")


def export_backbone(checkpoint: Path, out: Path, fmt: str, device: torch.device,
                    data_dir: Path | None = None) -> dict[str, Any]:
    """Write the backbone weights alone (with architecture and normalisation) or an ONNX graph."""
    if fmt not in BACKBONE_FORMATS:
        raise IslError(f"--format {fmt!r} is not available for the backbone; choose {' or '.join(BACKBONE_FORMATS)}")
    loaded = open_features(checkpoint, device, data_dir)
    spec = loaded.spec.to_meta()
    if fmt == "safetensors":
        tensors = loaded.artifact.with_prefix("backbone.")
        meta = {"backbone": spec, "source": str(checkpoint), "round": loaded.artifact.meta.get("round"),
                "load": "from isl_cli.backbone_file import load_backbone; model, info = load_backbone(PATH)"}
        if spec["variant"] == "imagenet" and spec["arch"] in ("resnet18", "resnet50"):
            meta["torchvision"] = (f"keys except fc.* load into torchvision.models.{spec['arch']}() "
                                   "with load_state_dict(..., strict=False)")
        write_artifact(out, "backbone", tensors, fingerprint=loaded.fingerprint, config=loaded.artifact.config,
                       meta=meta)
        return {"format": fmt, "tensors": len(tensors), **spec}
    return _export_onnx(loaded, out, spec)


def _export_onnx(loaded, out: Path, spec: dict[str, Any]) -> dict[str, Any]:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise IslError("ONNX export needs the onnx extra: pip install 'isl-cli[onnx]'") from None
    model = loaded.model.to("cpu").eval()
    dummy = torch.zeros(2, 3, spec["image_size"], spec["image_size"])

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (dummy,), str(tmp), input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, dynamo=False,
                              opset_version=17)

    atomic_write(out, write)
    return {"format": "onnx", "input": ["batch", 3, spec["image_size"], spec["image_size"]], **spec}


def export_embeddings(checkpoint: Path, out: Path, split_name: str, fmt: str, device: torch.device,
                      batch_size: int = 256, progress=None, data_dir: Path | None = None, amp: str = "none",
                      channels_last: bool = False) -> dict[str, Any]:
    """Features (N, D) float32 of un-augmented images of a split, with labels and indices.

    `amp` and `channels_last` set the precision of the backbone forward (see isl_cli.precision).
    """
    if fmt not in EMBEDDING_FORMATS:
        raise IslError(f"--format {fmt!r} is not available for embeddings; choose {' or '.join(EMBEDDING_FORMATS)}")
    if split_name not in ("train", "test"):
        raise IslError(f"--split must be train or test, got {split_name!r}")
    precision = resolve(amp, channels_last, device)
    loaded = open_features(checkpoint, device, data_dir)
    precision.prepare(loaded.model)
    split = load_split(loaded.data_dir, split_name, fingerprint=loaded.fingerprint)
    workers = int(loaded.artifact.config.get("num_workers", 0))
    log(precision.describe())
    features = embed(loaded.model, split, loaded.spec, device=device, batch_size=batch_size, num_workers=workers,
                     progress=progress, precision=precision).cpu()  # (N, D)
    labels = split.labels.cpu()
    indices = torch.arange(len(split), dtype=torch.int64)
    if fmt == "safetensors":
        write_artifact(out, "embeddings", {"features": features, "labels": labels, "indices": indices},
                       fingerprint=loaded.fingerprint, config=loaded.artifact.config,
                       meta={"split": split_name, "source": str(checkpoint), "classes": split.classes,
                             "backbone": loaded.spec.to_meta()})
        files = [out]
    else:
        files = _write_npy(out, {"features": features, "labels": labels, "indices": indices})
    return {"format": fmt, "split": split_name, "num": len(split), "dim": features.shape[1],
            "files": [str(f) for f in files]}


def npy_paths(out: Path) -> dict[str, Path]:
    """`emb.npy` -> features in emb.npy, labels in emb.labels.npy, indices in emb.indices.npy.

    The features go to OUT exactly as named (`--format npy --out e.bin` writes e.bin, e.bin.labels.npy, ...).
    """
    stem = out.name[:-4] if out.name.endswith(".npy") else out.name
    return {"features": out, "labels": out.with_name(f"{stem}.labels.npy"),
            "indices": out.with_name(f"{stem}.indices.npy")}


def _write_npy(out: Path, arrays: dict[str, torch.Tensor]) -> list[Path]:
    paths = npy_paths(out)
    for name, tensor in arrays.items():
        array = np.ascontiguousarray(tensor.numpy())

        def write(tmp: Path, array=array) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, array, allow_pickle=False)

        atomic_write(paths[name], write)
    return list(paths.values())
