"""Resumable, checksum-verified downloads into `<root>/downloads/`.

A download streams into `<file>.part`; a later run continues it with an HTTP
Range request (a server that ignores the range makes it start over). The
finished file must match its official MD5: a mismatch sets it aside as
`<file>.corrupt` and raises `IslError`; a match renames it into place.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from isl_cli.data.sources import registry
from isl_cli.errors import IslError

CHUNK_BYTES = 1 << 18
TIMEOUT_S = 30.0
USER_AGENT = "isl-cli (python urllib)"


def md5_of(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_md5(key: str) -> str | None:
    """The official MD5 of a table key ("cifar10/cifar-10-python.tar.gz"), if known."""
    return registry.OFFICIAL_MD5.get(key)


def set_aside(path: Path) -> Path:
    """Rename a bad file to `<name>.corrupt` (replacing an older one); returns the new path."""
    corrupt = path.with_name(path.name + ".corrupt")
    os.replace(path, corrupt)
    return corrupt


def cached_file(key: str, downloads_dir: Path) -> Path:
    """Where the download of `key` lives in the cache."""
    return Path(downloads_dir) / key


def is_cached(key: str, downloads_dir: Path) -> bool:
    """True when the finished file is in the cache (its checksum is checked on use)."""
    return cached_file(key, downloads_dir).is_file()


def fetch_file(key: str, downloads_dir: Path, *, progress: bool = True, console: Console | None = None) -> Path:
    """Return the verified cached file for `key`, downloading it if needed.

    Args:
        key: "<data set>/<file name>", a key of `registry.DOWNLOAD_URLS`.
        downloads_dir: the cache folder (`<root>/downloads`).
        progress: show a Rich progress bar on stderr.

    Raises:
        IslError: no network (names the URL and `--source`), an interrupted
            transfer (run again to resume), or a checksum mismatch (the file
            is set aside as `.corrupt`).
    """
    console = console or Console(stderr=True, highlight=False)
    urls = registry.DOWNLOAD_URLS.get(key, ())
    if not urls:
        raise IslError(f"{key}: no download location is known")
    md5 = expected_md5(key)
    target = cached_file(key, downloads_dir)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IslError(f"{target.parent}: cannot create folder ({exc.strerror or exc})") from exc
    if target.is_file():
        if md5 is None or md5_of(target) == md5:
            return target
        corrupt = set_aside(target)
        console.print(f"[yellow]{target}: checksum mismatch, set aside as {corrupt.name}; downloading again[/yellow]")

    part = target.with_name(target.name + ".part")
    failures: list[_Unreachable] = []
    for url in urls:
        try:
            _download(url, part, progress=progress, console=console, label=registry.file_name(key))
            break
        except _Unreachable as exc:
            failures.append(exc)
    else:
        first = failures[0]
        hint = "" if all(f.refused for f in failures) else "no network? "
        raise IslError(
            f"cannot download {first.url} ({first}); {hint}fetch the file elsewhere and pass it with --source PATH"
        )

    got = md5_of(part)
    if md5 is not None and got != md5:
        corrupt = target.with_name(target.name + ".corrupt")
        os.replace(part, corrupt)
        raise IslError(
            f"{target.name}: checksum mismatch (md5 {got}, expected {md5}); "
            f"the file was set aside as {corrupt} and not used; run again to download it anew"
        )
    os.replace(part, target)
    return target


class _Unreachable(Exception):
    """The server could not be reached (refused=False) or refused the file (HTTP error); no byte received."""

    def __init__(self, url: str, reason: str, refused: bool = False):
        super().__init__(reason)
        self.url = url
        self.refused = refused


def _download(url: str, part: Path, *, progress: bool, console: Console, label: str) -> None:
    """Stream `url` into `part`, continuing an existing `.part` with a Range request."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return  # the part is already complete (or longer): the checksum decides
        raise _Unreachable(url, f"HTTP {exc.code} {exc.reason}", refused=True) from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Unreachable(url, str(reason) or type(exc).__name__) from None

    with response:
        status = getattr(response, "status", None)
        resumed = bool(offset) and status == 206 and _range_start(response.headers.get("Content-Range")) == offset
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        received = offset
        bar = _progress_bar(console) if progress else None
        try:
            if bar is not None:
                bar.start()
                task = bar.add_task(label, total=total, completed=offset)
            with open(part, "ab" if resumed else "wb") as handle:
                while True:
                    try:
                        block = response.read(CHUNK_BYTES)
                    except (OSError, socket.timeout, http.client.HTTPException) as exc:
                        raise IslError(
                            f"download of {url} interrupted after {received} bytes ({exc}); "
                            f"run the command again to resume it"
                        ) from None
                    if not block:
                        break
                    handle.write(block)
                    received += len(block)
                    if bar is not None:
                        bar.update(task, completed=received)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            if bar is not None:
                bar.stop()
    if total is not None and received < total:
        raise IslError(
            f"download of {url} interrupted after {received} of {total} bytes; run the command again to resume it"
        )


def _range_start(content_range: str | None) -> int | None:
    """The first byte of a `Content-Range: bytes a-b/c` header."""
    if not content_range or not content_range.startswith("bytes "):
        return None
    first = content_range[6:].split("-", 1)[0]
    return int(first) if first.isdigit() else None


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
