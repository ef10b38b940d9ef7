"""A finished round 0 adopted by a run (`isl run --start-from`): several runs then compare their miners from the
same round-0 features, as a study of ISL against its control needs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from isl_cli.artifacts import read_header
from isl_cli.config import FeaturesConfig, to_dict
from isl_cli.data.store import dataset_header
from isl_cli.engine.progress import log
from isl_cli.errors import IslError

#: Fields that do not change what round 0 computes (how data is loaded).
IGNORED = frozenset({"num_workers"})


def check_round0(path: Path, config: FeaturesConfig, data_dir: Path) -> None:
    """Refuse, in one line, a file that is not the finished round 0 this run would have trained."""
    header = read_header(path, "features")
    meta = header.meta
    if not meta.get("complete"):
        raise IslError(f"--start-from {path}: is an unfinished checkpoint; finish it first (train-features --resume)")
    if int(meta.get("round", -1)) != 0 or meta.get("graph_entries"):
        raise IslError(f"--start-from {path}: is round {meta.get('round')}, not a round 0 without neighbours")
    fingerprint = dataset_header(data_dir, "train").fingerprint
    if header.fingerprint != fingerprint:
        raise IslError(f"--start-from {path}: was trained on another data set than {data_dir}")
    wanted, made = to_dict(config), header.config
    differs = sorted(k for k in wanted if k not in IGNORED and made.get(k) != wanted[k])
    if differs:
        shown = ", ".join(f"{k} {made.get(k)!r} (this run: {wanted[k]!r})" for k in differs[:4])
        raise IslError(f"--start-from {path}: was trained with other settings: {shown}; give this run the same "
                       "options")


def adopt_round0(path: Path, target: Path, config: FeaturesConfig, data_dir: Path) -> None:
    """Place `path` as the run's round-0 features (a hard link where possible, else a copy), once."""
    if target.exists():
        return
    check_round0(path, config, data_dir)
    tmp = target.with_name(target.name + ".adopting")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, target)
    log(f"round 0: adopted {path} (--start-from)")
