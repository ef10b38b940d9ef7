"""The run folder of `isl run`: its file names, and the config it holds (one run per folder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from isl_cli import distributed
from isl_cli.artifacts import atomic_write_json
from isl_cli.config import RunConfig, to_dict
from isl_cli.engine.progress import log
from isl_cli.errors import IslError

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
FINAL_FILE = "final-knn.json"
FINAL_LINEAR_FILE = "final-linear.json"
BASELINES_FILE = "baselines.json"


def stage_path(run_dir: Path, round_index: int, stage: str) -> Path:
    """`run_dir/r{round}-{stage}.safetensors`."""
    return Path(run_dir) / f"r{round_index}-{stage}.safetensors"


def claim_run_dir(run_dir: Path, config: RunConfig, data_dir: Path, overwrite: bool,
                  start_from: Path | None = None) -> None:
    """Record the resolved config (and an adopted round 0); refuse to mix with a folder that holds a different one."""
    record = {"config": to_dict(config), "data_dir": str(data_dir)}
    if start_from is not None:
        record["start_from"] = str(Path(start_from).resolve())
    record = json.loads(json.dumps(record))  # as JSON reads it back
    path = run_dir / CONFIG_FILE
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            existing = None
        if existing != record:
            if not overwrite:
                diff = _config_diff(existing, record)
                raise IslError(f"{run_dir} holds a run with a different config ({diff}); use another --run-dir, "
                               "or --overwrite to discard that run")
            _clear(run_dir)
    elif run_dir.exists() and any(run_dir.glob("r*-*.safetensors")):
        if not overwrite:
            raise IslError(f"{run_dir} holds stage files but no {CONFIG_FILE}; use another --run-dir or --overwrite")
        _clear(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)


def refuse_data_inside_run_dir(data_dir: Path, run_dir: Path) -> None:
    """The run folder may be emptied (--overwrite): it must never hold the data set it reads."""
    data, run = Path(data_dir).resolve(), Path(run_dir).resolve()
    if data == run or run in data.parents:
        raise IslError(f"--run-dir {run_dir} holds the data set folder {data_dir}, which the run reads "
                       "(and --overwrite would delete); choose another --run-dir")


def _clear(run_dir: Path) -> None:
    log(f"[yellow]--overwrite: discarding the previous run in {run_dir}[/yellow]")
    if not distributed.context().is_main:
        distributed.barrier()
        return
    for child in run_dir.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    distributed.barrier()


def _config_diff(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return "unreadable config.json"
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = sorted(k for k in set(flat_old) | set(flat_new) if flat_old.get(k) != flat_new.get(k))
    shown = ", ".join(f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
