"""File safety: outputs never replace inputs, full disks, stale temp files, digests, NaN, one writer per output."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from conftest import TINY, TINY_GAN, assert_error_line, invoke_ok, spawn_isl
from isl_cli import artifacts
from isl_cli.artifacts import read_artifact, read_header, write_artifact
from isl_cli.checkpoints import save_neighbors
from isl_cli.digest import DIGEST_KEY, tensors_digest
from isl_cli.errors import IslError
from isl_cli.locks import lock_path

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def made(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """One artifact of every kind, each made by its own writer (the CLI's, in-process)."""
    cli = invoke_ok
    folder = tmp_path_factory.mktemp("safety")
    data = folder / "data" / "shapes"
    cli("fetch-data", "shapes", "--root", folder / "data", "--num-train", "40", "--num-test", "20", "--quiet")
    paths = {"dataset": data / "train.safetensors", "features": folder / "f.safetensors",
             "gan": folder / "g.safetensors", "mined": folder / "n.safetensors",
             "neighbors": folder / "hand-n.safetensors", "backbone": folder / "b.safetensors",
             "embeddings": folder / "e.safetensors"}
    cli("train-features", "--data", data, "--out", paths["features"], *TINY, "--epochs", "1", "--eval-k", "5")
    cli("train-gan", "--features", paths["features"], "--out", paths["gan"], *TINY_GAN, "--epochs", "1")
    cli("mine-neighbors", "--features", paths["features"], "--gan", paths["gan"], "--out", paths["mined"],
        *TINY_GAN, "--max-passes", "1")
    fingerprint = read_header(paths["dataset"]).fingerprint
    save_neighbors(paths["neighbors"], torch.tensor([[0, 1], [2, 3], [4, 5]]), fingerprint=fingerprint,
                   num_images=40, round_index=0, round_added=torch.zeros(3, dtype=torch.int64))
    cli("export", paths["features"], "--out", paths["backbone"], "--device", "cpu")
    cli("export", paths["features"], "--what", "embeddings", "--out", paths["embeddings"], "--device", "cpu")
    return paths


def _flip_data_byte(path: Path) -> None:
    """Flip one bit in the middle of the tensor data (after the 8-byte length and the JSON header)."""
    raw = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", raw[:8])
    start = 8 + header_len
    assert len(raw) > start, "no tensor data to corrupt"
    raw[start + (len(raw) - start) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


# --------------------------------------------------------------------------- digest


def test_every_writer_records_a_digest_that_verifies(made):
    for kind, path in made.items():
        header = read_header(path)
        assert header.raw_metadata[DIGEST_KEY].startswith("sha256:"), kind
        art = read_artifact(path)
        assert tensors_digest(art.tensors) == header.raw_metadata[DIGEST_KEY], kind
    test_split = made["dataset"].with_name("test.safetensors")
    assert DIGEST_KEY in read_header(test_split).raw_metadata


def test_digest_covers_names_dtypes_shapes_and_bytes():
    base = {"a": torch.arange(6, dtype=torch.float32)}
    digest = tensors_digest(base)
    assert tensors_digest({"a": torch.arange(6, dtype=torch.float32)}) == digest
    assert tensors_digest({"b": torch.arange(6, dtype=torch.float32)}) != digest
    assert tensors_digest({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3)}) != digest
    assert tensors_digest({"a": torch.arange(6, dtype=torch.int32).view(torch.float32)}) != digest
    changed = torch.arange(6, dtype=torch.float32)
    changed[3] = torch.nextafter(changed[3], torch.tensor(10.0))
    assert tensors_digest({"a": changed}) != digest
    assert tensors_digest({"x": torch.ones(3, dtype=torch.bfloat16), "y": torch.tensor([True, False])})


def _copy_all(made: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """A private copy of every artifact and the data set (the fixture stays intact)."""
    data = tmp_path / "data" / "shapes"
    shutil.copytree(made["dataset"].parent, data)
    copies = {"dataset": data / "train.safetensors"}
    for kind, path in made.items():
        if kind != "dataset":
            copies[kind] = tmp_path / path.name
            shutil.copy(path, copies[kind])
    return copies


def test_one_flipped_data_byte_is_refused_by_every_reader(made, tmp_path, cli):
    from isl_cli.checkpoints import load_gan, load_neighbors
    from isl_cli.data.store import load_split
    from isl_cli.backbone_file import load_backbone

    files = _copy_all(made, tmp_path)
    data = files["dataset"].parent
    for kind in ("features", "gan", "neighbors", "backbone", "embeddings"):
        _flip_data_byte(files[kind])
    corrupt = tmp_path / "bad-data" / "shapes"
    shutil.copytree(data, corrupt)
    _flip_data_byte(corrupt / "train.safetensors")

    with pytest.raises(IslError, match="corrupt"):
        load_split(corrupt, "train")
    result = cli("train-features", "--data", corrupt, "--out", tmp_path / "x.safetensors", *TINY, "--epochs", "1")
    assert_error_line(result, "corrupt", "train.safetensors", "re-create it")

    for command in (["eval-knn", files["features"], "--data", data, "--device", "cpu"],
                    ["export", files["features"], "--data", data, "--out", tmp_path / "b2.safetensors"],
                    ["train-gan", "--features", files["features"], "--data", data,
                     "--out", tmp_path / "g2.safetensors", *TINY_GAN]):
        assert_error_line(cli(*command), "corrupt", str(files["features"]))

    good_features = made["features"]
    result = cli("mine-neighbors", "--features", good_features, "--gan", files["gan"],
                 "--out", tmp_path / "n2.safetensors", *TINY_GAN)
    assert_error_line(result, "corrupt", str(files["gan"]))
    result = cli("train-features", "--data", made["dataset"].parent, "--init", good_features,
                 "--neighbors", files["neighbors"], "--out", tmp_path / "f2.safetensors", *TINY, "--epochs", "1")
    assert_error_line(result, "corrupt", str(files["neighbors"]))

    with pytest.raises(IslError, match="corrupt"):
        load_gan(files["gan"], fingerprint=None)
    with pytest.raises(IslError, match="corrupt"):
        load_neighbors(files["neighbors"], fingerprint=None, num_images=40)
    with pytest.raises(IslError, match="corrupt"):
        load_backbone(files["backbone"])
    with pytest.raises(IslError, match="corrupt"):
        read_artifact(files["embeddings"], "embeddings")


def test_file_without_digest_loads_with_one_note(tmp_path, capsys):
    from safetensors.torch import save_file

    path = tmp_path / "old.safetensors"
    save_file({"pairs": torch.tensor([[0, 1]])}, str(path), metadata={"isl.kind": "neighbors"})
    art = read_artifact(path, "neighbors")
    read_artifact(path, "neighbors")
    assert torch.equal(art["pairs"], torch.tensor([[0, 1]]))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("isl: note: ") and "unverified" in lines[0]


# --------------------------------------------------------------------------- NaN and inf


def _with_nan(source: Path, out: Path, prefix: str) -> Path:
    """A copy of an artifact with one NaN in its first tensor under `prefix`, digest rewritten (valid file)."""
    art = read_artifact(source)
    tensors = dict(art.tensors)
    name = next(k for k in sorted(tensors) if k.startswith(prefix) and tensors[k].is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    write_artifact(out, art.kind, tensors, fingerprint=art.fingerprint, config=art.config, meta=art.meta)
    return out


def test_nan_in_bank_weights_or_gan_is_refused(made, tmp_path, cli):
    data = made["dataset"].parent
    bank = _with_nan(made["features"], tmp_path / "nan-bank.safetensors", "bank.memory")
    weights = _with_nan(made["features"], tmp_path / "nan-weights.safetensors", "backbone.")
    for features in (bank, weights):
        for command in (["eval-knn", features, "--data", data, "--device", "cpu"],
                        ["export", features, "--data", data, "--out", tmp_path / "x.safetensors"],
                        ["train-gan", "--features", features, "--data", data, "--out", tmp_path / "g.safetensors",
                         *TINY_GAN],
                        ["mine-neighbors", "--features", features, "--gan", made["gan"], "--data", data,
                         "--out", tmp_path / "n.safetensors", *TINY_GAN],
                        ["train-features", "--data", data, "--init", features, "--out", tmp_path / "f.safetensors",
                         *TINY, "--epochs", "1"]):
            assert_error_line(cli(*command), "NaN or infinite", str(features))
    gan = _with_nan(made["gan"], tmp_path / "nan-gan.safetensors", "generator.")
    result = cli("mine-neighbors", "--features", made["features"], "--gan", gan, "--out", tmp_path / "n.safetensors",
                 *TINY_GAN)
    assert_error_line(result, "NaN or infinite", "generator")
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "n.safetensors").exists()


# --------------------------------------------------------------------------- outputs never replace inputs


def test_no_command_writes_over_its_own_input(made, tmp_path, cli):
    files = _copy_all(made, tmp_path)
    data = files["dataset"].parent
    before = {p: p.read_bytes() for p in [*files.values(), data / "test.safetensors"]}
    features, gan = files["features"], files["gan"]
    cases = [
        ["export", features, "--data", data, "--out", features],
        ["export", features, "--data", data, "--out", features, "--overwrite"],
        ["export", features, "--data", data, "--what", "embeddings", "--out", data / "test.safetensors",
         "--overwrite"],
        ["export", features, "--data", data, "--what", "embeddings", "--split", "train", "--out",
         data / "train.safetensors", "--overwrite"],
        ["train-features", "--data", data, "--init", features, "--out", features, "--overwrite", *TINY],
        ["train-features", "--data", data, "--out", data / "test.safetensors", "--overwrite", *TINY],
        ["train-features", "--data", data, "--neighbors", files["neighbors"], "--out", files["neighbors"],
         "--overwrite", *TINY],
        ["train-gan", "--features", features, "--data", data, "--out", features, "--overwrite", *TINY_GAN],
        ["train-gan", "--features", features, "--data", data, "--init", gan, "--out", gan, "--overwrite", *TINY_GAN],
        ["mine-neighbors", "--features", features, "--gan", gan, "--data", data, "--out", gan, "--overwrite",
         *TINY_GAN],
        ["mine-neighbors", "--features", features, "--gan", gan, "--data", data, "--out", data / "train.safetensors",
         "--overwrite", *TINY_GAN],
    ]
    for case in cases:
        assert_error_line(cli(*case), "is also an input of this command")
    link = tmp_path / "link.safetensors"
    os.link(features, link)  # another name for the same file
    assert_error_line(cli("export", features, "--data", data, "--out", link, "--overwrite"), "is also an input")
    for path, content in before.items():
        assert path.read_bytes() == content, path


def test_export_refuses_existing_out_and_unknown_suffix(made, tmp_path, cli):
    out = tmp_path / "b.safetensors"
    out.write_bytes(b"keep me")
    assert_error_line(cli("export", made["features"], "--out", out), "already exists", "--overwrite")
    assert out.read_bytes() == b"keep me"
    assert_error_line(cli("export", made["features"], "--out", tmp_path / "b.bin"), "unknown suffix", "--format")
    assert not (tmp_path / "b.bin").exists()
    result = cli("export", made["features"], "--out", tmp_path / "b.bin", "--format", "safetensors")
    assert result.exit_code == 0, result.output
    assert read_header(tmp_path / "b.bin").kind == "backbone"
    result = cli("export", made["features"], "--out", out, "--overwrite")
    assert result.exit_code == 0 and read_header(out).kind == "backbone"


def test_run_folder_holding_the_data_set_is_refused(made, tmp_path, cli):
    files = _copy_all(made, tmp_path)
    data = files["dataset"].parent
    before = (data / "train.safetensors").read_bytes()
    result = cli("run", "--data", data, "--run-dir", data.parent, "--overwrite", "--device", "cpu", "--quiet")
    assert_error_line(result, "holds the data set folder")
    assert (data / "train.safetensors").read_bytes() == before


# --------------------------------------------------------------------------- full disk, temp files, modes


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _safetensors_enospc(*args, **kwargs):
    raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                          "message: \"No space left on device\" })")


@pytest.mark.parametrize("failure", [_enospc, _safetensors_enospc])
def test_full_disk_is_one_line_and_leaves_no_temp_file(made, tmp_path, cli, monkeypatch, failure):
    monkeypatch.setattr(artifacts, "_serialise", failure)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = cli("export", made["features"], "--out", out_dir / "b.safetensors")
    assert_error_line(result, "b.safetensors", "cannot write")
    result = cli("fetch-data", "shapes", "--root", out_dir, "--num-train", "8", "--num-test", "4", "--quiet")
    assert_error_line(result, "cannot write")
    leftovers = [p for p in out_dir.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers


def test_raw_writer_enospc_is_an_isl_error(tmp_path):
    with pytest.raises(IslError, match="No space left on device"):
        artifacts.atomic_write(tmp_path / "x.json", _enospc)
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_files_are_removed_by_the_next_write(tmp_path):
    out = tmp_path / "f.safetensors"
    ours = tmp_path / ".f.safetensors.0badc0de.tmp"  # our writer's, killed
    foreign = tmp_path / ".tmpAbC123"  # safetensors' own, killed long ago
    fresh_foreign = tmp_path / ".tmpXyZ789"  # maybe still being written by someone
    live = tmp_path / ".f.safetensors.11111111.tmp"  # a live writer holds its lock
    other_output = tmp_path / ".g.safetensors.22222222.tmp"
    for path in (ours, foreign, fresh_foreign, live, other_output):
        path.write_bytes(b"x" * 100)
    old = time.time() - 3600
    os.utime(foreign, (old, old))
    with open(live, "rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        write_artifact(out, "embeddings", {"features": torch.zeros(2, 2)}, fingerprint="x")
        assert not ours.exists() and not foreign.exists()
        assert live.exists() and fresh_foreign.exists() and other_output.exists()
    assert read_artifact(out).kind == "embeddings"


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, mask, mode):
    previous = os.umask(mask)
    try:
        write_artifact(tmp_path / "a.safetensors", "embeddings", {"features": torch.zeros(2)}, fingerprint="x")
        artifacts.atomic_write_json(tmp_path / "a.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == mode
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode


# --------------------------------------------------------------------------- one writer per output


def _wait_for_holder(lock: Path, proc, timeout: float = 120) -> dict:
    start = time.time()
    while True:
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - start < timeout, "the first writer never took its lock"
        try:
            record = json.loads(lock.read_text() or "{}")
        except (OSError, ValueError):
            record = {}
        if record.get("pid") == proc.pid:
            return record
        time.sleep(0.05)


def _second_is_refused_then_a_kill_frees_the_lock(command: list, lock: Path, tmp_path: Path) -> None:
    first = spawn_isl(*command)
    try:
        record = _wait_for_holder(lock, first)
        assert record["host"] and record["started"]
        from conftest import run_isl

        start = time.time()
        second = run_isl(*command, timeout=120)
        assert second.returncode == 2, second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "another isl process" in lines[0] and f"pid {first.pid}" in lines[0], lines
        assert time.time() - start < 60  # refused at once (the time is the interpreter's start-up)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert lock.exists()  # left behind by the killed process: stale, and recognised as such
    third = spawn_isl(*command)
    try:
        _wait_for_holder(lock, third)
    finally:
        third.send_signal(signal.SIGKILL)
        third.wait()


def test_two_writers_of_one_output(made, tmp_path):
    out = tmp_path / "f.safetensors"
    command = ["train-features", "--data", made["dataset"].parent, "--out", out, *TINY, "--epochs", "500",
               "--overwrite"]
    _second_is_refused_then_a_kill_frees_the_lock(command, lock_path(out), tmp_path)


def test_two_runs_in_one_run_folder(made, tmp_path):
    run_dir = tmp_path / "run"
    command = ["run", "--data", made["dataset"].parent, "--run-dir", run_dir, "--rounds", "1", "--epochs", "500",
               "--width", "0.0625", "--low-dim", "16", "--batch-size", "16", "--device", "cpu", "--quiet"]
    _second_is_refused_then_a_kill_frees_the_lock(command, lock_path(run_dir), tmp_path)


def test_lock_is_released_after_the_command(made, tmp_path, cli):
    out = tmp_path / "b.safetensors"
    assert cli("export", made["features"], "--out", out).exit_code == 0
    assert not lock_path(out).exists()
    assert_error_line(cli("export", made["features"], "--out", out), "already exists")
    assert not lock_path(out).exists()
