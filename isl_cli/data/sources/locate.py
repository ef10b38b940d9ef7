"""Find the official files of a data set: in the download cache (downloading them) or under --source.

Each locator returns the paths plus a checksum status: "verified" when the
files match the official MD5, "differs" when a --source file of a format that
is safe to parse (CIFAR binary, SVHN .mat, IDX) does not; its contents are
then validated by the parser and a note says so. The pickled CIFAR python
archives must always match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from isl_cli.data.sources import registry
from isl_cli.data.sources.cifar import ARCHIVE_NAMES, archive_contents
from isl_cli.data.sources.download import fetch_file, is_cached, md5_of
from isl_cli.data.sources.idx import find_idx_files
from isl_cli.data.sources.svhn import FILES as SVHN_FILES
from isl_cli.errors import IslError

DOWNLOADS_FOLDER = "downloads"


@dataclass
class LocateContext:
    """Where downloads go, whether they are allowed, and the notes for the summary."""

    root: Path
    progress: bool
    allow_download: bool
    console: Console
    notes: list[str]

    @property
    def downloads(self) -> Path:
        return self.root / DOWNLOADS_FOLDER

    def download(self, name: str, key: str) -> Path:
        if not self.allow_download and not is_cached(key, self.downloads):
            url = registry.DOWNLOAD_URLS[key][0]
            raise IslError(
                f"{name} must first be downloaded from {url}; run `isl fetch-data {name}` "
                f"or pass --source PATH"
            )
        return fetch_file(key, self.downloads, progress=self.progress, console=self.console)


def source_checksum(path: Path, key: str, ctx: LocateContext) -> str:
    """"verified" when `path` matches the official MD5 of `key`; "differs" (with a note) otherwise."""
    expected = registry.OFFICIAL_MD5.get(key)
    if expected is not None and md5_of(path) == expected:
        return "verified"
    ctx.notes.append(f"{path.name}: checksum differs from the official file; its contents were validated instead")
    return "differs"


def locate_cifar_archive(name: str, source: Path | None, ctx: LocateContext) -> tuple[Path, str, str]:
    """(archive, "python" | "binary", checksum status). Pickled archives must match the official MD5."""
    if source is None:
        key = registry.DATASETS[name].downloads[0]
        return ctx.download(name, key), "python", "verified"
    if source.is_dir():
        found = [source / ARCHIVE_NAMES[(name, fmt)] for fmt in ("python", "binary")
                 if (source / ARCHIVE_NAMES[(name, fmt)]).is_file()]
        if not found:
            wanted = " or ".join(ARCHIVE_NAMES[(name, fmt)] for fmt in ("python", "binary"))
            raise IslError(f"{source}: no {wanted} in this folder")
        source = found[0]
    digest = md5_of(source)
    for (dataset, fmt), archive in ARCHIVE_NAMES.items():
        if registry.OFFICIAL_MD5.get(f"{dataset}/{archive}") == digest:
            if dataset != name:
                raise IslError(f"{source} is the official {archive}; use `isl fetch-data {dataset}`")
            return source, fmt, "verified"
    contents = archive_contents(source)
    if contents is None:
        wanted = " or ".join(ARCHIVE_NAMES[(name, f)] for f in ("python", "binary"))
        raise IslError(f"{source}: not a CIFAR archive (expected the official {wanted})")
    dataset, fmt = contents
    if dataset != name:
        raise IslError(f"{source} holds {dataset}, not {name}; use `isl fetch-data {dataset}`")
    if fmt == "python":
        raise IslError(
            f"{source}: checksum {digest} does not match the official {ARCHIVE_NAMES[(name, fmt)]}; "
            f"corrupted or modified archive, refused (pickled data is read only from verified archives)"
        )
    ctx.notes.append(f"{source.name}: checksum differs from the official archive; its records were validated instead")
    return source, fmt, "differs"


def locate_svhn_files(source: Path | None, ctx: LocateContext) -> tuple[Path, Path, str]:
    """(train_32x32.mat, test_32x32.mat, checksum status) from the cache or a folder / one of the files."""
    if source is None:
        paths = [ctx.download("svhn", f"svhn/{SVHN_FILES[s]}") for s in ("train", "test")]
        return paths[0], paths[1], "verified"
    folder = source if source.is_dir() else source.parent
    if source.is_file() and source.name not in SVHN_FILES.values():
        raise IslError(f"{source}: expected {SVHN_FILES['train']} or {SVHN_FILES['test']} (the official files)")
    paths = [folder / SVHN_FILES[s] for s in ("train", "test")]
    for path in paths:
        if not path.is_file():
            raise IslError(f"{folder}: no {path.name} here (SVHN needs both official .mat files side by side)")
    checks = [source_checksum(p, f"svhn/{p.name}", ctx) for p in paths]
    return paths[0], paths[1], "verified" if all(c == "verified" for c in checks) else "differs"


def locate_idx_files(name: str, source: Path | None, ctx: LocateContext) -> tuple[dict[tuple[str, str], Path], str]:
    """The four IDX files {(split, "images" | "labels"): path} and the checksum status."""
    if source is None:
        folder = None
        for key in registry.DATASETS[name].downloads:
            folder = ctx.download(name, key).parent
        return find_idx_files(folder), "verified"
    folder = source if source.is_dir() else source.parent
    files = find_idx_files(folder)
    verified = all(
        registry.OFFICIAL_MD5.get(f"{name}/{p.name}") is not None
        and md5_of(p) == registry.OFFICIAL_MD5[f"{name}/{p.name}"]
        for p in files.values()
    )
    if not verified:
        ctx.notes.append("the IDX files' checksums differ from the official .gz files (recompressed copies?); "
                         "their contents were validated instead")
    return files, "verified" if verified else "differs"
