"""Shared fixtures: a tiny shapes data set and the CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

# Tiny models: the settings every stage test uses (fast on 2 CPU cores).
TINY = ["--width", "0.0625", "--low-dim", "16", "--batch-size", "16", "--device", "cpu", "--quiet"]
TINY_GAN = ["--batch-size", "16", "--num-draws", "64", "--device", "cpu", "--quiet"]
GAN_FAST = ["--lr", "0.01"]  # a tiny GAN that learns something in 3 short epochs


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 96 + 48 image shapes data set, written once per session."""
    from isl_cli.data.sources.shapes import read_shapes
    from isl_cli.data.store import save_dataset

    folder = tmp_path_factory.mktemp("data") / "shapes"
    train, test = read_shapes(num_train=96, num_test=48, seed=3)
    save_dataset(folder, train, test, config={"name": "shapes", "num_train": 96, "num_test": 48})
    return folder


@pytest.fixture()
def cli():
    """Invoke `isl ...` in-process; returns the typer Result."""
    runner = CliRunner()

    def invoke(*args: str):
        from isl_cli.cli.app import app

        return runner.invoke(app, [str(a) for a in args])

    return invoke


def run_isl(*args, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m isl_cli ...` in a subprocess (for kill, Ctrl-C and exit-code tests)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "isl_cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


def spawn_isl(*args, cwd: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "isl_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)


def assert_error_line(result, *fragments: str) -> str:
    """Exit code 2 and exactly one stderr line `isl: error: ...` holding every fragment (in-process result)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("isl: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture()
def one_thread():
    """Tiny tensors: one intra-op thread avoids thread hand-off costs (ms per op on a busy 2-core machine).

    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def features(tiny_data, tmp_path_factory) -> Path:
    """A round-0 features file of 2 tiny epochs (one per test module that asks for it)."""
    out = tmp_path_factory.mktemp("features") / "r0-features.safetensors"
    result = run_isl("train-features", "--data", tiny_data, "--out", out, *TINY, "--epochs", "2", "--eval-k", "20")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def gan(features) -> Path:
    """A GAN of 3 fixed epochs trained on `features`."""
    out = features.with_name("r0-gan.safetensors")
    result = run_isl("train-gan", "--features", features, "--out", out, *TINY_GAN, *GAN_FAST, "--epochs", "3")
    assert result.returncode == 0, result.stderr
    return out


def invoke_ok(*args):
    """`isl ...` in-process; asserts exit 0 and returns the typer Result."""
    from typer.testing import CliRunner

    from isl_cli.cli.app import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result
