"""Path rules every command shares: the names of isl's own lock and temporary files, and what an output may be.

isl keeps two kinds of files of its own beside an output NAME: its lock `.NAME.lock` (locks.py) and the
temporary file of an atomic write `.NAME.<8 hex>.tmp` (artifacts.py); older writes by safetensors left
`.tmpXXXXXX`. Those are taken over, truncated and removed without asking, so none of them may ever be a
command's input. An output is written by renaming a new regular file over it: an existing output that is not a
regular file (a device such as /dev/null, a pipe, a socket, a folder, a link that leads nowhere) is refused,
even with --overwrite.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import stat
from pathlib import Path
from typing import Iterable

from isl_cli.errors import IslError

LOCK_SUFFIX = ".lock"
TEMP_SUFFIX = ".tmp"
FOREIGN_TEMP_GLOB = ".tmp??????"  # safetensors' own temporary files (isl before it wrote its own)

_OWN_NAMES = (
    ("lock", re.compile(r"\..+\.lock")),
    ("temporary", re.compile(r"\..+\.[0-9a-f]{8}\.tmp")),
    ("temporary", re.compile(r"\.tmp.{6}")),
)
_SPECIAL = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
            (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def lock_name(name: str) -> str:
    """The lock file's name beside an output (or folder) called `name`."""
    return f".{name}{LOCK_SUFFIX}"


def temp_name(name: str, token: str) -> str:
    """The name of one atomic write's temporary file beside `name` (`token`: 8 hex digits)."""
    return f".{name}.{token}{TEMP_SUFFIX}"


def temp_glob(name: str) -> str:
    """A glob of every temporary file of writes of `name`."""
    return f".{glob.escape(name)}.*{TEMP_SUFFIX}"


def own_file_kind(path: str | os.PathLike) -> str | None:
    """"lock" or "temporary" when `path` (or the file a link leads to) has the name of one of isl's own files."""
    names = {Path(path).name}
    try:
        names.add(Path(path).resolve().name)
    except (OSError, RuntimeError):
        pass
    for name in names:
        for kind, pattern in _OWN_NAMES:
            if pattern.fullmatch(name):
                return kind
    return None


def refuse_own_files(inputs: Iterable[str | os.PathLike | None]) -> None:
    """IslError when an input is one of isl's own lock or temporary files (taken over and removed by writes)."""
    for path in inputs:
        if path is None:
            continue
        kind = own_file_kind(path)
        if kind is not None:
            raise IslError(f"{path}: has the name of an isl {kind} file, which isl truncates and removes; "
                           "it cannot be an input (rename it if it really is an artifact)")


def refuse_special_output(path: str | os.PathLike, option: str | None = None) -> None:
    """IslError when an output exists and is not a regular file (a link to a regular file is fine).

    The output is written by renaming a new file over it: a device, pipe or socket would be replaced by a file.
    """
    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise IslError(f"{label}: is a symbolic link to {os.readlink(path)}, which does not exist; remove the "
                           "link or choose another output") from None
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IslError(f"{label}: is a symbolic link loop; remove it or choose another output") from None
        raise IslError(f"{label}: cannot be examined ({exc.strerror or exc})") from None
    for test, what in _SPECIAL:
        if test(mode):
            hint = "give a file name" if what == "a folder" else "isl replaces only regular files, even with --overwrite"
            raise IslError(f"{label}: exists and is {what}, not a regular file; {hint}")


def nearest_folder(path: str | os.PathLike, option: str, shown: str | os.PathLike | None = None) -> Path:
    """The nearest existing folder at or above `path`, where an output's missing folders would be created.

    A path component that exists but is no folder (a file, a dangling link, a link loop) is refused: the
    folders could never be made through it.
    """
    label = f"{option} {shown if shown is not None else path}"
    folder = Path(path) if str(path) else Path(".")
    while True:
        if os.path.lexists(folder):
            if folder.is_dir():
                return folder
            if folder.is_symlink():
                try:
                    folder.resolve(strict=True)
                    why = "a symbolic link to something that is not a folder"
                except RuntimeError:
                    why = "a symbolic link loop"
                except OSError as exc:
                    why = ("a symbolic link loop" if exc.errno == errno.ELOOP
                           else f"a symbolic link to {os.readlink(folder)}, which does not exist")
                raise IslError(f"{label}: {_which(folder, shown)}{why}, not a folder")
            raise IslError(f"{label}: {_which(folder, shown)}not a folder")
        if folder.parent == folder:
            return folder
        folder = folder.parent


def _which(folder: Path, shown: str | os.PathLike | None) -> str:
    """"is " when `folder` is the path the user gave, else "<folder> is " (a folder above it)."""
    return "is " if shown is not None and Path(shown) == folder else f"{folder} is "
