"""Progress bars, Ctrl-C handling and log lines shared by the stages."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(stderr=True, highlight=False)


def quiet() -> None:
    """Silence logs and progress bars (data-parallel ranks other than 0)."""
    _console.quiet = True


def log(message: str) -> None:
    """One human log line on stderr (stdout stays for results)."""
    _console.print(message, soft_wrap=True)


class StopFlag:
    """Set by the first Ctrl-C; the stage checks it after each step and saves."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested


@contextlib.contextmanager
def graceful_interrupt() -> Iterator[StopFlag]:
    """Turn the first SIGINT into a flag (a second one interrupts at once)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):  # noqa: ARG001
        if flag.requested:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag.requested = True
        what = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        log(f"[yellow]{what}: stopping after the current step and saving a checkpoint (Ctrl-C again to abort)[/yellow]")

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def make_progress(enabled: bool = True) -> Progress:
    """A Rich progress bar with a free-text stats field (loss terms, images/s)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=_console,
        disable=not enabled,
        transient=False,
    )


class Throughput:
    """Images per second over a stage, for the progress bar and the logs."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.images = 0

    def add(self, n: int) -> None:
        self.images += n

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        elapsed = self.seconds
        return self.images / elapsed if elapsed > 0 else 0.0
