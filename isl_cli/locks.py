"""One writer per output: an advisory lock beside each output (or run folder).

The lock of `runs/x/r0-features.safetensors` is `runs/x/.r0-features.safetensors.lock`
(of the run folder `runs/x`: `runs/.x.lock`). It is held with `fcntl.flock`,
which the kernel releases when the process ends however it ends (a SIGKILL
too), so a lock file left by a killed process is simply taken over: stale
locks need no guessing. The file records who holds it (pid, host, start time,
command) so that a refused writer can say which process is in the way.

Under torchrun only rank 0 takes locks: the other ranks never write, and if
rank 0 is refused it exits, which makes torchrun stop the whole job.
Locks are re-entrant within a process and released when the command ends
(`release_all`, called by the CLI on every exit path) or when their `with`
block ends.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import functools
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from isl_cli.errors import IslError
from isl_cli.paths import lock_name

_HELD: dict[Path, tuple[int, int]] = {}  # resolved output -> (fd, hold count)
_MADE: dict[Path, Path] = {}  # resolved output -> the highest folder its lock had to create


def lock_path(target: str | os.PathLike) -> Path:
    """Where the lock of `target` (a file or a folder) lives: `.NAME.lock` beside it."""
    target = Path(target)
    return target.parent / lock_name(target.name)


def _key(target: Path) -> Path:
    return Path(os.path.abspath(target)).parent.resolve() / Path(target).name


def _takes_locks() -> bool:
    """Rank 0 (or a single process) takes locks; torchrun's other ranks never write."""
    from isl_cli import distributed

    if distributed.context().enabled:
        return distributed.context().is_main
    return os.environ.get("RANK", "0") == "0"


def acquire(target: str | os.PathLike) -> None:
    """Lock `target` for this process, or raise IslError naming the process that holds it."""
    if not _takes_locks():
        return
    key = _key(Path(target))
    if key in _HELD:
        fd, count = _HELD[key]
        _HELD[key] = (fd, count + 1)
        return
    _HELD[key] = (_take(key), 1)


def release(target: str | os.PathLike) -> None:
    """Undo one `acquire`; the last one removes the lock file and unlocks."""
    key = _key(Path(target))
    if key not in _HELD:
        return
    fd, count = _HELD[key]
    if count > 1:
        _HELD[key] = (fd, count - 1)
        return
    del _HELD[key]
    with contextlib.suppress(OSError):
        lock_path(key).unlink()  # unlinked while still locked: a waiter re-checks the inode
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)
    _remove_empty_folders(lock_path(key).parent, _MADE.pop(key, None))


def _remove_empty_folders(folder: Path, highest: Path | None) -> None:
    """Remove the folders the lock created, if the command left them empty (a refused command leaves nothing)."""
    if highest is None:
        return
    while True:
        try:
            folder.rmdir()  # only succeeds on an empty folder
        except OSError:
            return
        if folder == highest or folder.parent == folder:
            return
        folder = folder.parent


def release_all() -> None:
    """Release every lock this process holds (end of a command, on every exit path)."""
    for key in list(_HELD):
        _HELD[key] = (_HELD[key][0], 1)
        release(key)


@contextlib.contextmanager
def holding(*targets: str | os.PathLike) -> Iterator[None]:
    """Lock every target for the duration of the block."""
    taken: list[str | os.PathLike] = []
    try:
        for target in targets:
            acquire(target)
            taken.append(target)
        yield
    finally:
        for target in reversed(taken):
            release(target)


def writes(outputs: Callable[[Any], Iterable[Any]], inputs: Callable[[Any], Iterable[Any]]):
    """Decorate a stage `fn(job)`: before any work, check its files (`artifacts.check_io`: no output is an
    input, a device or a folder, no input is one of isl's own lock or temporary files), then lock the first
    output for the whole stage.

    `outputs(job)` lists what the stage writes (the main output first), `inputs(job)` what it reads.
    """
    from isl_cli.artifacts import check_io

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(job, *args, **kwargs):
            outs = [Path(p) for p in outputs(job) if p is not None]
            check_io(outs, inputs(job))
            with holding(outs[0]):
                return fn(job, *args, **kwargs)

        return wrapper

    return decorate


def _take(key: Path) -> int:
    path = lock_path(key)
    missing = path.parent
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    if not path.parent.exists():
        _MADE[key] = missing
    for _ in range(10):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise IslError(f"{key}: cannot create its lock file {path} ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                _note_unlocked(path, exc)
                return os.open(path, os.O_RDONLY)  # no locks on this file system: proceed unguarded
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise IslError(f"{key}: another isl process is writing it ({holder}); wait for it to finish, "
                               f"or stop it (a killed process's lock {path.name} is released by itself)") from None
            raise IslError(f"{key}: cannot lock {path} ({exc.strerror or exc})") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if not same:  # the holder released and removed it between our open and our lock: try again
            os.close(fd)
            continue
        _write_holder(fd)
        return fd
    raise IslError(f"{key}: cannot take its lock {path} (it keeps changing)")


def _note_unlocked(path: Path, exc: OSError) -> None:
    sys.stderr.write(f"isl: note: {path}: this file system offers no locks ({exc.strerror or exc}); "
                     "nothing stops a second writer of the same output\n")


def _write_holder(fd: int) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["isl", *sys.argv[1:]])[:300],
    }
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)


def _read_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict) or "pid" not in record:
        return "holder unknown"
    return (f"pid {record.get('pid')} on {record.get('host', '?')}, started {record.get('started', '?')}: "
            f"{record.get('command', '?')}")
