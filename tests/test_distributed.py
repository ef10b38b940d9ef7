"""Data parallelism under torchrun with 2 CPU processes (gloo).

In float64 one data-parallel step gives the gradients of one process on the whole
batch to 1e-10 (relative): the scaling of the loss, the gradient averaging and the
batch norm over the global batch are exact. In float32, the tolerance of 2 ranks
against 1 process with the same global batch, after one epoch of two steps: the
epoch loss within 1e-4 (relative), the memory bank within 2e-3 (max abs), all
weights together within 2% (relative norm). Those differences are only
floating-point summation order (batch-norm sums over two half-batches instead of
one batch), which nearly constant channels of the 4-channel test models amplify.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, TINY_GAN, run_isl
from isl_cli.artifacts import read_artifact, read_header

HERE = Path(__file__).parent
FEATURES_1EP = ["--width", "0.0625", "--low-dim", "16", "--batch-size", "48", "--epochs", "1", "--eval-every", "1",
                "--eval-k", "20", "--device", "cpu", "--quiet"]


def torchrun(*args, timeout: float = 400) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 ...` (module or script arguments follow)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def torchrun_isl(*args, timeout: float = 400) -> subprocess.CompletedProcess:
    return torchrun("-m", "isl_cli", *args, timeout=timeout)


@pytest.fixture(scope="module")
def one_process(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "r0-features.safetensors"
    result = run_isl("train-features", "--data", tiny_data, "--out", out, *FEATURES_1EP)
    assert result.returncode == 0, result.stderr
    return out


def test_one_data_parallel_step_is_exact_in_float64(tmp_path):
    report = tmp_path / "grad.json"
    result = torchrun(HERE / "ddp_grad_probe.py", report)
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(report.read_text())
    assert probe["max_rel_grad_diff"] < 1e-10 and probe["max_rel_running_var_diff"] < 1e-10


def test_two_ranks_keep_identical_banks_and_match_one_process(tiny_data, one_process, tmp_path):
    out, report = tmp_path / "r0-features.safetensors", tmp_path / "report.json"
    result = torchrun(HERE / "ddp_probe.py", tiny_data, out, report)
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(report.read_text())
    assert probe == {"world": 2, "identical": True, "max_abs_diff": 0.0}
    assert read_header(out).meta["world_size"] == 2

    single, double = load_file(str(one_process)), load_file(str(out))
    loss_1 = read_header(one_process).meta["history"][-1]["loss"]
    loss_2 = read_header(out).meta["history"][-1]["loss"]
    assert abs(loss_1 - loss_2) <= 1e-4 * abs(loss_1)
    assert (single["bank.memory"] - double["bank.memory"]).abs().max() <= 2e-3
    keys = [k for k, v in single.items() if k.startswith("backbone.") and v.is_floating_point()]
    flat_1 = torch.cat([single[k].flatten() for k in keys])
    flat_2 = torch.cat([double[k].flatten() for k in keys])
    assert (flat_1 - flat_2).norm() <= 0.02 * flat_1.norm()


def test_killed_under_torchrun_then_resumed_continues_exactly(tiny_data, tmp_path):
    args = ["train-features", "--data", tiny_data, *TINY, "--epochs", "3", "--eval-every", "1", "--eval-k", "20"]
    reference = tmp_path / "ref.safetensors"
    result = torchrun_isl(*args, "--out", reference)
    assert result.returncode == 0, result.stderr[-3000:]

    out = tmp_path / "killed.safetensors"
    partial = tmp_path / "killed.partial.safetensors"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "isl_cli",
               *map(str, args), "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    start = time.time()
    while not partial.exists():
        assert proc.poll() is None and time.time() - start < 300
        time.sleep(0.02)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers, mid-epoch
    proc.wait()
    assert not out.exists()
    resumed = torchrun_isl(*args, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / f".{out.name}.lock").exists()  # rank 0 held the lock and released it
    a, b = load_file(str(out)), load_file(str(reference))
    for path in (out, reference):  # written by rank 0 under torchrun: the digest verifies
        assert read_artifact(path).header.raw_metadata["isl.digest"].startswith("sha256:")
    for key in a:
        if key.startswith(("backbone.", "bank.", "optim.")):
            assert torch.equal(a[key], b[key]), key


def test_gan_mining_and_eval_under_torchrun(tiny_data, one_process, tmp_path, cli):
    gan_1 = tmp_path / "gan-1.safetensors"
    result = cli("train-gan", "--features", one_process, "--out", gan_1, *TINY_GAN, "--lr", "0.01", "--epochs", "2")
    assert result.exit_code == 0, result.output
    gan_2 = tmp_path / "gan-2.safetensors"
    result = torchrun_isl("train-gan", "--features", one_process, "--out", gan_2, *TINY_GAN, "--lr", "0.01",
                          "--epochs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    g1, g2 = load_file(str(gan_1)), load_file(str(gan_2))
    assert torch.allclose(g1["g_losses"], g2["g_losses"], rtol=1e-4)
    for key in g1:
        if key.startswith("generator."):
            assert torch.allclose(g1[key], g2[key], atol=1e-4), key

    # mining with the same GAN: every rank adds every rank's pairs, so the graph equals one process's
    mined_1, mined_2 = tmp_path / "n1.safetensors", tmp_path / "n2.safetensors"
    mine = ["mine-neighbors", "--features", one_process, "--gan", gan_1, *TINY_GAN, "--tau", "0.3",
            "--base-radius", "0.3", "--max-passes", "1"]
    assert cli(*mine, "--out", mined_1).exit_code == 0
    result = torchrun_isl(*mine, "--out", mined_2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(load_file(str(mined_1))["pairs"], load_file(str(mined_2))["pairs"])

    evaluated_1 = cli("eval-knn", one_process, "--k", "20", "--recompute", "--json", "--device", "cpu")
    evaluated_2 = torchrun_isl("eval-knn", one_process, "--k", "20", "--recompute", "--json", "--device", "cpu")
    assert evaluated_2.returncode == 0, evaluated_2.stderr[-3000:]
    first = json.loads(evaluated_1.stdout[evaluated_1.stdout.index("{"):])
    second = json.loads(evaluated_2.stdout[evaluated_2.stdout.index("{"):])  # only rank 0 prints
    assert first["results"] == second["results"]


def test_run_under_torchrun(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    result = torchrun_isl("run", "--data", tiny_data, "--run-dir", run_dir, "--rounds", "2", "--epochs", "1",
                          "--width", "0.0625", "--low-dim", "16", "--batch-size", "16", "--gan-epochs", "1",
                          "--num-draws", "64", "--max-passes", "1", "--eval-k", "20", "--k", "20", "--device", "cpu",
                          "--quiet", "--no-report")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1] and summary["final"]["scored"]
    assert summary["baselines"]["pixels"]["scored"] and summary["baselines"]["random"]["scored"]
    assert result.stdout.count("ISL run") == 1  # rank 0 alone prints the table


def test_bf16_channels_last_under_torchrun(tiny_data, tmp_path):
    """The fast path under DDP: global batch norm takes bf16 activations (statistics in fp32), banks stay equal."""
    out = tmp_path / "r0-features.safetensors"
    result = torchrun_isl("train-features", "--data", tiny_data, "--out", out, *FEATURES_1EP,
                          "--amp", "bf16", "--channels-last")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precision: bf16 autocast, channels-last (--amp bf16" in result.stderr
    header = read_header(out)
    assert header.meta["world_size"] == 2 and header.meta["complete"]
    loss = header.meta["history"][-1]["loss"]
    assert loss == loss and abs(loss) != float("inf")
    assert load_file(str(out))["bank.memory"].isfinite().all()
