"""The artifact layer: round trips, atomic writes, and clean errors for every bad file."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from isl_cli import artifacts
from isl_cli.artifacts import Expect, read_artifact, read_header, write_artifact
from isl_cli.cli.app import app
from isl_cli.errors import IslError


def _sample(path: Path, kind: str = "features", fingerprint: str = "abc") -> Path:
    write_artifact(
        path,
        kind,
        {"bank.memory": torch.randn(6, 4), "labels": torch.arange(6), "scalar": torch.tensor(3.5)},
        fingerprint=fingerprint,
        config={"lr": 0.03, "arch": "resnet18"},
        meta={"round": 2, "history": [{"epoch": 1, "loss": 1.5}]},
    )
    return path


def test_round_trip(tmp_path):
    path = _sample(tmp_path / "a.safetensors")
    art = read_artifact(path, "features", fingerprint="abc",
                        expect={"bank.memory": Expect(torch.float32, ("N", 4)), "labels": Expect(torch.int64, ("N",))})
    assert art.kind == "features"
    assert art.meta["round"] == 2 and art.config["arch"] == "resnet18"
    assert art["bank.memory"].shape == (6, 4)
    assert torch.equal(art["labels"], torch.arange(6))
    assert art["scalar"].item() == 3.5
    header = read_header(path)
    assert header.schema == artifacts.SCHEMA_VERSION and header.fingerprint == "abc"
    assert header.tensors["labels"].dtype == torch.int64


def test_shared_storage_is_saved_separately(tmp_path):
    base = torch.arange(10.0)
    write_artifact(tmp_path / "s.safetensors", "features", {"a": base, "b": base[:5]}, fingerprint="x")
    art = read_artifact(tmp_path / "s.safetensors")
    assert torch.equal(art["b"], torch.arange(5.0))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "not a safetensors file"),
        (lambda p: p.write_bytes(b"hello world, this is text"), "not a safetensors file"),
        (lambda p: p.write_bytes(struct.pack("<Q", 4) + b"nope"), "not JSON"),
        (lambda p: p.write_bytes(struct.pack("<Q", 2) + b"[]"), "not a JSON object"),
    ],
)
def test_bad_files(tmp_path, make, message):
    path = tmp_path / "bad.safetensors"
    make(path)
    with pytest.raises(IslError, match=message) as info:
        read_artifact(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_file(tmp_path):
    path = _sample(tmp_path / "t.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(IslError, match="truncated|not a safetensors"):
        read_artifact(path)


def test_wrong_kind_schema_fingerprint_shape_dtype(tmp_path):
    path = _sample(tmp_path / "g.safetensors", kind="gan")
    with pytest.raises(IslError, match="is a gan artifact, expected features"):
        read_artifact(path, "features")
    path = _sample(tmp_path / "f.safetensors")
    with pytest.raises(IslError, match="different data set"):
        read_artifact(path, "features", fingerprint="zzz")
    with pytest.raises(IslError, match="shape"):
        read_artifact(path, expect={"bank.memory": Expect(torch.float32, (7, 4))})
    with pytest.raises(IslError, match="shape"):
        read_artifact(path, expect={"bank.memory": Expect(torch.float32, ("N", None)), "labels": Expect(torch.int64, (None,))},
                      dims={"N": 5})
    with pytest.raises(IslError, match="dtype"):
        read_artifact(path, expect={"labels": Expect(torch.float32, None)})
    with pytest.raises(IslError, match="missing"):
        read_artifact(path, expect={"nothere": Expect(torch.float32, None)})


def test_newer_schema_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "SCHEMA_VERSION", artifacts.SCHEMA_VERSION + 1)
    path = _sample(tmp_path / "n.safetensors")
    monkeypatch.undo()
    with pytest.raises(IslError, match="newer"):
        read_artifact(path)


def test_plain_safetensors_is_not_an_artifact(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(IslError, match="not an isl artifact"):
        read_artifact(path)


def test_failed_write_keeps_old_file(tmp_path):
    path = _sample(tmp_path / "keep.safetensors")
    before = path.read_bytes()

    def broken(tmp):
        Path(tmp).write_bytes(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        artifacts.atomic_write(path, broken)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]


def test_sigkill_during_writes_never_leaves_a_torn_file(tmp_path):
    """A writer killed at a random moment leaves a readable old or new file."""
    path = tmp_path / "k.safetensors"
    script = textwrap.dedent(f"""
        import torch, sys
        from isl_cli.artifacts import write_artifact
        i = 0
        while True:
            write_artifact({str(path)!r}, "features", {{"bank.memory": torch.full((400, 512), float(i))}},
                           fingerprint="k", meta={{"i": i}})
            if i == 0:
                print("ready", flush=True)
            i += 1
    """)
    for delay in (0.05, 0.21, 0.37):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        import time

        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        art = read_artifact(path, "features")
        assert torch.all(art["bank.memory"] == float(art.meta["i"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_random_bytes_give_clean_errors(tmp_path, data):
    path = tmp_path / "random.safetensors"
    path.write_bytes(data)
    with pytest.raises(IslError):
        read_artifact(path)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0), flip=st.integers(min_value=0), value=st.integers(0, 255))
def test_truncated_or_corrupted_valid_files(tmp_path, cut, flip, value):
    path = tmp_path / "v.safetensors"
    if not path.exists():
        _sample(path)
    good = path.read_bytes()
    target = tmp_path / "c.safetensors"
    truncated = good[: cut % len(good)]
    target.write_bytes(truncated)
    with pytest.raises(IslError):
        read_artifact(target)
    corrupted = bytearray(good)
    corrupted[flip % len(good)] = value
    target.write_bytes(bytes(corrupted))
    try:
        read_artifact(target)  # a flip inside tensor data or a harmless header byte may still be valid
    except IslError as exc:
        assert "\n" not in str(exc)


def test_strings_round_trip():
    names = ["a/b.JPEG", "", "ünïcode/ß.png", "x" * 300]
    blob, offsets = artifacts.strings_to_tensors(names)
    assert artifacts.tensors_to_strings(blob, offsets) == names


runner = CliRunner()


def test_inspect_table_and_json(tmp_path):
    path = _sample(tmp_path / "i.safetensors")
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "features" in result.output and "bank.memory" in result.output
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    record = json.loads(result.output)
    assert record["kind"] == "features" and record["meta"]["round"] == 2
    assert {"name": "bank.memory", "shape": [6, 4], "dtype": "F32"} in record["tensors"]


def test_inspect_bad_file_is_one_line_exit_2(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(os.urandom(64))
    result = subprocess.run([sys.executable, "-m", "isl_cli", "inspect", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "junk.safetensors" in result.stderr
    assert "Traceback" not in result.stderr
    debug = subprocess.run([sys.executable, "-m", "isl_cli", "--debug", "inspect", str(path)],
                           capture_output=True, text=True)
    assert "Traceback" in debug.stderr


def test_version_and_placeholder_exit_codes():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("isl ")
