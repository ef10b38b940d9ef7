"""All file I/O of the project: safetensors artifacts with validated metadata.

Every file a stage writes is a safetensors file whose string metadata holds:

    isl.kind         dataset | features | gan | neighbors | backbone | embeddings
    isl.schema       integer schema version of the layout (this module's SCHEMA_VERSION)
    isl.version      the isl version that wrote it
    isl.config       the full stage config, JSON
    isl.fingerprint  fingerprint of the data set the file belongs to
    isl.meta         anything else the stage records (round, epochs, metrics), JSON
    isl.digest       sha256 of every tensor's name, dtype, shape and bytes (digest.py)
    isl.meta_digest  sha256 of every other metadata entry (digest.py)

Writes are atomic (our own temporary file in the same folder, fsync, rename,
fsync of the folder; safetensors only serialises to bytes, so ours is the only
rename and files get the umask's mode); several files can be written as one
(all renamed only once all are written). A temporary file left by a killed
writer is removed by the next write of the same output. An output that exists
and is not a regular file is never replaced. Reads validate everything, verify
the digests (a header read: the metadata's), and raise `IslError` with one line
that names the file and the fault. No pickle is ever written or read here.
"""

from __future__ import annotations

import contextlib
import errno
from collections import abc
import fcntl
import hashlib
import json
import os
import secrets
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save as st_serialise

from isl_cli import __version__
from isl_cli.digest import DIGEST_KEY, META_DIGEST_KEY, metadata_digest, tensors_digest
from isl_cli.errors import IslError
from isl_cli.paths import (
    FOREIGN_TEMP_GLOB,
    refuse_own_files,
    refuse_special_output,
    temp_glob,
    temp_name,
)

SCHEMA_VERSION = 1
KINDS = ("dataset", "features", "gan", "neighbors", "backbone", "embeddings")
MAX_HEADER_BYTES = 100 * 1024 * 1024

_DTYPES = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}
_DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "F16": 2, "BF16": 2, "F32": 4, "F64": 8}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Name, dtype and shape of one stored tensor, read from the header alone."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Header:
    """The parsed header of an artifact: metadata and tensor layout, no data."""

    path: Path
    kind: str
    schema: int
    version: str
    fingerprint: str
    config: dict[str, Any]
    meta: dict[str, Any]
    tensors: dict[str, TensorInfo]
    raw_metadata: dict[str, str]


@dataclass
class Artifact:
    """A loaded artifact: its header plus the tensors themselves."""

    header: Header
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.header.kind

    @property
    def meta(self) -> dict[str, Any]:
        return self.header.meta

    @property
    def config(self) -> dict[str, Any]:
        return self.header.config

    @property
    def fingerprint(self) -> str:
        return self.header.fingerprint

    @property
    def path(self) -> Path:
        return self.header.path

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def with_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors whose names start with `prefix`, with the prefix removed."""
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


# A shape spec entry: an int (exact), None (any) or a str naming a dimension that
# must be equal wherever the same name appears.
ShapeSpec = tuple[int | str | None, ...]


@dataclass(frozen=True)
class Expect:
    """What a reader requires of one tensor."""

    dtype: torch.dtype | tuple[torch.dtype, ...]
    shape: ShapeSpec | None = None
    required: bool = True


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class ArtifactWrite:
    """One artifact to write: `write_artifact`'s arguments."""

    path: Path
    kind: str
    tensors: Mapping[str, torch.Tensor]
    fingerprint: str
    config: Mapping[str, Any] | None = None
    meta: Mapping[str, Any] | None = None


def write_artifact(
    path: str | os.PathLike,
    kind: str,
    tensors: Mapping[str, torch.Tensor],
    *,
    fingerprint: str,
    config: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write `tensors` as a safetensors artifact of `kind`, atomically.

    A crash at any moment leaves either the previous file or the new one at
    `path`, never a partial file.
    """
    write_artifacts([ArtifactWrite(Path(path), kind, tensors, fingerprint, config, meta)])
    return Path(path)


def write_artifacts(items: Iterable[ArtifactWrite]) -> None:
    """Write several artifacts as one: none is renamed into place unless every one was written whole."""
    writers = []
    for item in items:
        if item.kind not in KINDS:
            raise ValueError(f"unknown artifact kind {item.kind!r}")
        path = Path(item.path)
        metadata = {
            "isl.kind": item.kind,
            "isl.schema": str(SCHEMA_VERSION),
            "isl.version": __version__,
            "isl.fingerprint": str(item.fingerprint),
            "isl.config": json.dumps(dict(item.config or {}), sort_keys=True, default=_json_default),
            "isl.meta": json.dumps(dict(item.meta or {}), sort_keys=True, default=_json_default),
        }
        prepared = _prepare_tensors(item.tensors)
        metadata[DIGEST_KEY] = tensors_digest(prepared)
        metadata[META_DIGEST_KEY] = metadata_digest(metadata)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IslError(f"{path}: cannot create folder ({exc.strerror or exc})") from exc

        def write(tmp: Path, prepared=prepared, metadata=metadata) -> None:
            data = _serialise(prepared, metadata)
            with open(tmp, "wb") as handle:
                handle.write(data)

        writers.append((path, write))
    atomic_write_all(writers)


def _serialise(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The safetensors bytes of a file (safetensors never touches the disk: our writer is the only one)."""
    return st_serialise(dict(tensors), metadata=dict(metadata))


def atomic_write(path: str | os.PathLike, writer) -> None:
    """Call `writer(tmp_path)` then fsync and rename the result over `path`.

    Under data parallelism only rank 0 writes; every rank waits until the file is in place.
    """
    atomic_write_all([(Path(path), writer)])


def atomic_write_all(writers: list[tuple[Path, Any]]) -> None:
    """`atomic_write` of several files as one: each `writer(tmp)` runs first; only when all succeeded are the
    temporary files renamed into place (a failure leaves every output as it was, and no temporary file)."""
    from isl_cli import distributed

    if distributed.context().enabled:
        if distributed.context().is_main:
            _write_atomically([(Path(p), w) for p, w in writers])
        distributed.barrier()
        return
    _write_atomically([(Path(p), w) for p, w in writers])


# A killed safetensors `save_file` (isl before the digest, or another tool) leaves `.tmpXXXXXX`
# beside the file; one not modified for this long is no longer being written.
FOREIGN_TEMP_IDLE_S = 60.0


def temp_files(path: Path) -> list[Path]:
    """Temporary files of writes of `path` (ours: `.NAME.*.tmp`), whoever is writing them."""
    return sorted(path.parent.glob(temp_glob(path.name)))


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Remove temporary files beside `path` that no live writer holds; returns what was removed.

    Ours are locked (flock) while being written, so an unlocked one belongs to a
    killed writer. safetensors' own `.tmpXXXXXX` files carry no lock and no
    owner: they go once nothing has written to them for FOREIGN_TEMP_IDLE_S.
    """
    removed: list[Path] = []
    for tmp in temp_files(path):
        try:
            fd = os.open(tmp, os.O_RDWR)  # NFS emulates flock with POSIX locks: exclusive needs write access
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live writer holds it (or this file system has no locks: then keep it)
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)
    now = time.time()
    for tmp in path.parent.glob(FOREIGN_TEMP_GLOB):
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime > FOREIGN_TEMP_IDLE_S:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass
    return removed


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new `.NAME.<random>.tmp` beside `path`, created with the umask's mode and locked by us."""
    for _ in range(100):
        tmp = path.parent / temp_name(path.name, secrets.token_hex(4))
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        with contextlib.suppress(OSError):  # a file system without locks: the file is simply never "stale"
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, tmp
    raise OSError(errno.EEXIST, "no free temporary file name")


def _write_atomically(writers: list[tuple[Path, Any]]) -> None:
    temps: dict[Path, tuple[int, Path]] = {}  # output -> (locked fd, its temporary file), until renamed
    path = writers[0][0]
    try:
        for path, _ in writers:
            refuse_special_output(path)  # a device, pipe or folder is never replaced by a file
        for path, writer in writers:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(path)
            temps[path] = _create_temp(path)
            tmp = temps[path][1]
            writer(tmp)
            with open(tmp, "rb+") as handle:
                handle.flush()
                os.fsync(handle.fileno())
        for path, _ in writers:
            fd, tmp = temps[path]
            os.replace(tmp, path)
            del temps[path]
            os.close(fd)
        for folder in {p.parent for p, _ in writers}:
            _fsync_dir(folder)
    except OSError as exc:
        raise IslError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    except SafetensorError as exc:  # safetensors reports its own I/O failures (a full disk) this way
        raise IslError(f"{path}: cannot write ({_short(exc)})") from exc
    finally:
        for fd, tmp in temps.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write raw bytes (a JSON summary, a PNG) atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _prepare_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and never two names sharing one storage."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"artifact tensor {name!r} is {type(tensor).__name__}, not a tensor")
        t = tensor.detach().to("cpu").contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


# --------------------------------------------------------------------------- reading


def read_header(path: str | os.PathLike, kind: str | Iterable[str] | None = None, *, verify: bool = True) -> Header:
    """Parse and validate an artifact's header without loading its tensors.

    Raises `IslError` naming the file for: a missing file, a file that is not
    safetensors, a truncated one, one without isl metadata, metadata that does
    not match its `isl.meta_digest` (unless `verify` is False: `isl inspect`),
    a newer schema, or a kind other than `kind`.
    """
    path = Path(path)
    raw = _read_header_bytes(path)
    return _parse_header(path, raw, kind, verify)


def read_artifact(
    path: str | os.PathLike,
    kind: str | Iterable[str] | None = None,
    *,
    fingerprint: str | None = None,
    expect: Mapping[str, Expect] | None = None,
    dims: Mapping[str, int] | None = None,
    device: str | torch.device = "cpu",
) -> Artifact:
    """Load and validate an artifact.

    Args:
        path: the file.
        kind: the kind (or kinds) the caller accepts.
        fingerprint: the data-set fingerprint the file must carry, if known.
        expect: required tensors by name, with dtype and shape specs.
        dims: values for the named dimensions used in `expect` shapes.
        device: where the tensors go.
    """
    path = Path(path)
    header = read_header(path, kind)
    if fingerprint is not None and header.fingerprint != fingerprint:
        raise IslError(
            f"{path}: belongs to a different data set (fingerprint {header.fingerprint or 'none'}, "
            f"expected {fingerprint}); artifacts made from different data cannot be mixed"
        )
    if expect:
        check_tensors(path, header.tensors, expect, dims)
    try:
        tensors = st_load_file(str(path))
    except OSError as exc:
        raise IslError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except Exception as exc:  # safetensors raises its own error types
        raise IslError(f"{path}: not a valid safetensors file ({_short(exc)})") from exc
    verify_digest(header, tensors)
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return Artifact(header=header, tensors=tensors)


_NOTED_UNVERIFIED: set[str] = set()
CORRUPT_HINT = "re-create it (re-run the command that wrote it) or restore a good copy"


def metadata_digest_ok(metadata: Mapping[str, str]) -> bool | None:
    """Whether the metadata matches its `isl.meta_digest` (None: a file written before isl recorded one)."""
    stored = metadata.get(META_DIGEST_KEY)
    return None if stored is None else metadata_digest(metadata) == stored


def verify_file(path: str | os.PathLike) -> dict[str, bool | None]:
    """Both digests of a file, checked: {"metadata": ok, "tensors": ok}, None where the file records none.

    Tensors are read one at a time (memory-mapped), so a large bank is checked without loading it whole.
    """
    from safetensors import safe_open

    header = read_header(path, verify=False)
    status: dict[str, bool | None] = {"metadata": metadata_digest_ok(header.raw_metadata),
                                      "tensors": None}
    stored = header.raw_metadata.get(DIGEST_KEY)
    if stored is not None:
        try:
            with safe_open(str(header.path), "pt") as handle:
                status["tensors"] = tensors_digest(_LazyTensors(handle)) == stored
        except Exception:  # noqa: BLE001  (safetensors' own errors: the data cannot be read as written)
            status["tensors"] = False
    return status


def refuse_corrupt(path: str | os.PathLike, status: Mapping[str, bool | None] | None = None) -> None:
    """One line when either digest of a file fails (`status` from `verify_file`, computed when not given)."""
    status = verify_file(path) if status is None else status
    failed = [what for what in ("metadata", "tensors") if status.get(what) is False]
    if failed:
        what = " and ".join("its metadata" if f == "metadata" else "its tensor data" for f in failed)
        raise IslError(f"{path}: corrupt: {what} does not match the digest written with it; {CORRUPT_HINT}")


class _LazyTensors(abc.Mapping):
    """The tensors of an open safetensors file, each read when asked for."""

    def __init__(self, handle: Any):
        self.handle = handle

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.handle.get_tensor(name)

    def __iter__(self):
        return iter(self.handle.keys())

    def __len__(self) -> int:
        return len(self.handle.keys())


def verify_digest(header: Header, tensors: Mapping[str, torch.Tensor]) -> bool:
    """Check the loaded tensors against the file's `isl.digest`; True when verified.

    A mismatch is an IslError; a file written before isl recorded digests (or
    made by hand) loads with a one-line note on stderr, once per file.
    """
    stored = header.raw_metadata.get(DIGEST_KEY)
    if stored is None:
        key = str(header.path)
        if key not in _NOTED_UNVERIFIED:
            _NOTED_UNVERIFIED.add(key)
            _note(f"{header.path}: has no {DIGEST_KEY} (written before isl recorded digests, or by hand); "
                  "its tensors are loaded unverified")
        return False
    if tensors_digest(tensors) != stored:
        raise IslError(f"{header.path}: corrupt: its tensor data does not match the digest written with it; "
                       f"{CORRUPT_HINT}")
    return True


def _note(text: str) -> None:
    from isl_cli import distributed

    if distributed.context().is_main:
        sys.stderr.write(f"isl: note: {text}\n")
        sys.stderr.flush()


def require_finite(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """One line naming the first tensor holding NaN or inf (weights, a memory bank)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            raise IslError(f"{path}: {what} {name!r} holds NaN or infinite values; this file cannot be used "
                           "(re-create it, e.g. train again with a lower --lr)")


# --------------------------------------------------------------------------- inputs vs outputs


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file: equal once resolved, or one inode (a hard link)."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):
        pass
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_io(outputs: Iterable[str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None]) -> None:
    """What every command checks of its files before any work, whatever --overwrite says: no input is one of
    isl's own lock or temporary files, every existing output is a regular file, and no output is an input."""
    outputs, inputs = [p for p in outputs if p is not None], [p for p in inputs if p is not None]
    refuse_own_files(inputs)
    for out in outputs:
        refuse_special_output(out)
    refuse_overwriting_inputs(outputs, inputs)


def refuse_overwriting_inputs(outputs: Iterable[str | os.PathLike | None],
                              inputs: Iterable[str | os.PathLike | None]) -> None:
    """IslError when any output would be written over one of the command's own inputs.

    Checked by every command before any work (`check_io`), whatever --overwrite
    says: no command ever replaces a file it reads.
    """
    ins = [Path(p) for p in inputs if p is not None]
    for out in (Path(p) for p in outputs if p is not None):
        for src in ins:
            if same_file(out, src):
                raise IslError(f"{out}: is also an input of this command ({src}); an output never replaces "
                               "its own input, even with --overwrite: choose another --out")


def refuse_existing(out: str | os.PathLike, overwrite: bool) -> None:
    """The rule every stage follows: an existing output is replaced only with --overwrite."""
    if Path(out).exists() and not overwrite:
        raise IslError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")


def check_tensors(
    path: Path,
    infos: Mapping[str, TensorInfo],
    expect: Mapping[str, Expect],
    dims: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Check stored tensor dtypes and shapes against `expect`; returns resolved dims."""
    resolved: dict[str, int] = dict(dims or {})
    for name, spec in expect.items():
        info = infos.get(name)
        if info is None:
            if spec.required:
                raise IslError(f"{path}: tensor {name!r} is missing")
            continue
        allowed = spec.dtype if isinstance(spec.dtype, tuple) else (spec.dtype,)
        if info.dtype not in allowed:
            want = " or ".join(str(d).replace("torch.", "") for d in allowed)
            raise IslError(f"{path}: tensor {name!r} has dtype {str(info.dtype).replace('torch.', '')}, expected {want}")
        if spec.shape is None:
            continue
        if len(info.shape) != len(spec.shape):
            raise IslError(f"{path}: tensor {name!r} has shape {list(info.shape)}, expected {len(spec.shape)} dimensions")
        for size, want in zip(info.shape, spec.shape):
            if want is None:
                continue
            if isinstance(want, str):
                if want in resolved and resolved[want] != size:
                    raise IslError(
                        f"{path}: tensor {name!r} has shape {list(info.shape)}, but {want} = {resolved[want]} here"
                    )
                resolved[want] = size
            elif size != want:
                raise IslError(f"{path}: tensor {name!r} has shape {list(info.shape)}, expected {list(spec.shape)}")
    return resolved


def _read_header_bytes(path: Path) -> tuple[dict[str, Any], int]:
    if not path.exists():
        raise IslError(f"{path}: no such file")
    if not path.is_file():
        raise IslError(f"{path}: not a file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise IslError(f"{path}: not a safetensors file (only {size} bytes)")
            (length,) = struct.unpack("<Q", prefix)
            if length == 0 or length > MAX_HEADER_BYTES or length > size - 8:
                raise IslError(f"{path}: not a safetensors file, or truncated (header length {length}, file {size} bytes)")
            blob = handle.read(length)
    except OSError as exc:
        raise IslError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise IslError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise IslError(f"{path}: not a safetensors file (header is not a JSON object)")
    data_size = size - 8 - length
    return header, data_size


def _parse_header(path: Path, raw: tuple[dict[str, Any], int], kind: str | Iterable[str] | None,
                  verify: bool = True) -> Header:
    header, data_size = raw
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise IslError(f"{path}: not a safetensors file (bad __metadata__)")
    if verify and metadata_digest_ok(metadata) is False:
        raise IslError(f"{path}: corrupt: its metadata (kind, config, fingerprint, description) does not match "
                       f"the digest written with it; {CORRUPT_HINT}")
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise IslError(f"{path}: not a safetensors file (bad entry for {name!r})")
        dtype_name, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype_name not in _DTYPES:
            raise IslError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name!r}")
        if (
            not isinstance(shape, list)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise IslError(f"{path}: not a safetensors file (bad entry for {name!r})")
        start, end = offsets
        numel = 1
        for s in shape:
            numel *= s
        if not 0 <= start <= end or end - start != numel * _DTYPE_SIZES[dtype_name]:
            raise IslError(f"{path}: not a safetensors file (bad offsets for {name!r})")
        if end > data_size:
            raise IslError(f"{path}: truncated (tensor {name!r} ends at byte {end}, data holds {data_size})")
        spans.append((start, end))
        tensors[name] = TensorInfo(name=name, dtype=_DTYPES[dtype_name], shape=tuple(shape))
    spans.sort()
    position = 0
    for start, end in spans:
        if start != position:
            raise IslError(f"{path}: not a safetensors file (tensor data overlaps or has gaps)")
        position = end
    if position != data_size:
        raise IslError(f"{path}: not a safetensors file (tensor data covers {position} of {data_size} bytes)")

    found_kind = metadata.get("isl.kind")
    if found_kind is None:
        raise IslError(f"{path}: a safetensors file, but not an isl artifact (no isl.kind metadata)")
    if found_kind not in KINDS:
        raise IslError(f"{path}: unknown artifact kind {found_kind!r}")
    if kind is not None:
        wanted = (kind,) if isinstance(kind, str) else tuple(kind)
        if found_kind not in wanted:
            raise IslError(f"{path}: is a {found_kind} artifact, expected {' or '.join(wanted)}")
    try:
        schema = int(metadata.get("isl.schema", str(SCHEMA_VERSION)))
    except ValueError:
        raise IslError(f"{path}: bad isl.schema {metadata.get('isl.schema')!r}") from None
    if schema > SCHEMA_VERSION:
        raise IslError(
            f"{path}: written with schema {schema} by isl {metadata.get('isl.version', '?')}, "
            f"newer than this isl {__version__} reads (schema {SCHEMA_VERSION}); upgrade isl"
        )
    config = _json_field(path, metadata, "isl.config")
    meta = _json_field(path, metadata, "isl.meta")
    return Header(
        path=path,
        kind=found_kind,
        schema=schema,
        version=metadata.get("isl.version", "unknown"),
        fingerprint=metadata.get("isl.fingerprint", ""),
        config=config,
        meta=meta,
        tensors=tensors,
        raw_metadata=dict(metadata),
    )


def _json_field(path: Path, metadata: Mapping[str, str], key: str) -> dict[str, Any]:
    text = metadata.get(key)
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise IslError(f"{path}: metadata {key} is not valid JSON") from None
    if not isinstance(value, dict):
        raise IslError(f"{path}: metadata {key} is not a JSON object")
    return value


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# --------------------------------------------------------------------------- helpers


def fingerprint_tensors(*tensors: torch.Tensor, extra: str = "") -> str:
    """A short content hash of tensors (dtype, shape and bytes) plus a string."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        digest.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes())
    digest.update(extra.encode())
    return digest.hexdigest()[:16]


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (F32, I64, ...)."""
    return _DTYPE_NAMES.get(dtype, str(dtype))


def strings_to_tensors(strings: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode strings as (bytes uint8 (total,), offsets int64 (n+1,)) for storage.

    File names that are not UTF-8 (held by Python as surrogate escapes) keep their exact bytes.
    """
    encoded = [s.encode("utf-8", "surrogateescape") for s in strings]
    offsets = torch.zeros(len(encoded) + 1, dtype=torch.int64)
    if encoded:
        offsets[1:] = torch.cumsum(torch.tensor([len(e) for e in encoded], dtype=torch.int64), 0)
    blob = torch.frombuffer(bytearray(b"".join(encoded)), dtype=torch.uint8) if offsets[-1] > 0 else torch.zeros(0, dtype=torch.uint8)
    return blob.clone(), offsets


def tensors_to_strings(blob: torch.Tensor, offsets: torch.Tensor) -> list[str]:
    """Inverse of `strings_to_tensors`."""
    data = blob.numpy().tobytes()
    bounds = offsets.tolist()
    return [data[bounds[i]:bounds[i + 1]].decode("utf-8", "surrogateescape") for i in range(len(bounds) - 1)]
