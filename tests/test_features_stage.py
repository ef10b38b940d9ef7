"""train-features and eval-knn end to end on a tiny data set: results, resume, bad input."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY, assert_error_line, run_isl, spawn_isl
from isl_cli.artifacts import read_header

EPOCHS = ["--epochs", "3", "--eval-every", "1", "--eval-k", "20"]


def _train(cli, data, out, *extra):
    result = cli("train-features", "--data", data, "--out", out, *TINY, *EPOCHS, *extra)
    assert result.exit_code == 0, result.output
    return result


def _weights(path: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(path))
    return {k: v for k, v in tensors.items() if k.startswith(("backbone.", "bank.", "optim."))}


def _assert_same(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{key} differs"


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """An uninterrupted 3-epoch run, made in a subprocess like the interrupted ones."""
    out = tmp_path_factory.mktemp("ref") / "r0-features.safetensors"
    result = run_isl("train-features", "--data", tiny_data, "--out", out, *TINY, *EPOCHS)
    assert result.returncode == 0, result.stderr
    return out


def test_train_writes_complete_features_and_metrics(reference, tiny_data):
    header = read_header(reference, "features")
    meta = header.meta
    assert meta["complete"] and meta["round"] == 0 and meta["stage_epochs"] == 3
    assert header.tensors["bank.memory"].shape == (96, 16)
    assert meta["dataset"] == str(tiny_data)
    lines = (reference.parent / "r0-features.metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all("knn_top1" in r and r["knn_on"] == "test" for r in records)
    assert all(r["aff"] == 0 and r["hp"] == 0 and r["loss"] == r["inst"] for r in records)
    bank = load_file(str(reference))["bank.memory"]
    # every row was updated at least once in 3 epochs, so every row is unit norm
    assert torch.allclose(bank.norm(dim=1), torch.ones(96), atol=1e-5)
    assert not (reference.parent / "r0-features.partial.safetensors").exists()


def test_eval_knn_bank_recompute_json_and_clamp(reference, cli):
    result = cli("eval-knn", reference, "--k", "200", "--k", "5", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    text = result.output[result.output.index("{"):]
    report = json.loads(text)
    assert [r["k"] for r in report["results"]] == [5, 96]  # 200 clamped to the 96 training images
    assert "clamped" in result.output
    assert all(0 <= r["top1"] <= r["top5"] <= 100 for r in report["results"])
    recomputed = cli("eval-knn", reference, "--k", "10", "--recompute", "--device", "cpu", "--quiet")
    assert recomputed.exit_code == 0, recomputed.output
    assert "recomputed" in recomputed.output and "top-1" in recomputed.output


def _wait_for(path: Path, proc, timeout: float = 120) -> None:
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - start < timeout
        time.sleep(0.02)


def test_sigkill_mid_epoch_then_resume_is_bit_exact(reference, tiny_data, tmp_path):
    out = tmp_path / "r0-features.safetensors"
    partial = tmp_path / "r0-features.partial.safetensors"
    proc = spawn_isl("train-features", "--data", tiny_data, "--out", out, *TINY, *EPOCHS)
    _wait_for(partial, proc)
    proc.send_signal(signal.SIGKILL)  # at once: on an idle machine the tiny run ends within a few tenths of a second
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    resumed = run_isl("train-features", "--data", tiny_data, "--out", out, *TINY, *EPOCHS, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    _assert_same(out, reference)
    records = [json.loads(x) for x in (tmp_path / "r0-features.metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_mid_epoch_prints_resume_and_exits(reference, tiny_data, tmp_path, signum, code):
    out = tmp_path / "r0-features.safetensors"
    partial = tmp_path / "r0-features.partial.safetensors"
    proc = spawn_isl("train-features", "--data", tiny_data, "--out", out, *TINY, *EPOCHS)
    _wait_for(partial, proc)
    first = partial.stat().st_mtime_ns
    proc.send_signal(signum)  # SIGTERM is what SLURM sends: the same graceful save as Ctrl-C
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "resume with" in stderr and "--resume" in stderr
    meta = read_header(partial, "features").meta
    assert partial.stat().st_mtime_ns != first and not meta["complete"]
    resumed = run_isl("train-features", "--data", tiny_data, "--out", out, *TINY, *EPOCHS, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(out, reference)


def _handmade_neighbors(path: Path, data: Path, pairs: torch.Tensor, fingerprint: str | None = None) -> None:
    """Exactly what docs/artifacts.md documents for a neighbours file made by hand."""
    fingerprint = fingerprint or read_header(data / "train.safetensors").fingerprint
    save_file({"pairs": pairs}, str(path), metadata={
        "isl.kind": "neighbors", "isl.fingerprint": fingerprint, "isl.meta": json.dumps({"num_images": 96})})


def test_handmade_neighbors_train_isl_round(reference, tiny_data, tmp_path, cli):
    labels = load_file(str(tiny_data / "train.safetensors"))["labels"]
    # pair each image with the next one of the same class: a user's own kNN graph, say
    order = torch.argsort(labels, stable=True)
    same = labels[order[:-1]] == labels[order[1:]]
    pairs = torch.stack([order[:-1][same], order[1:][same]], 1)
    neighbors = tmp_path / "mine.safetensors"
    _handmade_neighbors(neighbors, tiny_data, pairs)
    out = tmp_path / "r1-features.safetensors"
    result = cli("train-features", "--data", tiny_data, "--init", reference, "--neighbors", neighbors,
                 "--out", out, *TINY, "--epochs", "1", "--eval-every", "1", "--eval-k", "20")
    assert result.exit_code == 0, result.output
    header = read_header(out, "features")
    assert header.meta["round"] == 1
    assert header.meta["graph_entries"] == 2 * len(pairs)
    history = header.meta["history"]
    assert len(history) == 4 and history[-1]["round"] == 1  # 3 epochs of round 0 carried over
    assert history[-1]["aff"] > 0 and history[-1]["hp"] > 0
    assert header.meta["total_epochs"] == 4


def test_bad_inputs_exit_2_with_one_line(reference, tiny_data, tmp_path, cli):
    cases = []
    other = tmp_path / "other.safetensors"
    _handmade_neighbors(other, tiny_data, torch.tensor([[0, 1]]), fingerprint="0000000000000000")
    cases.append((["--neighbors", other], "different data set"))
    gan_like = tmp_path / "gan.safetensors"
    from isl_cli.artifacts import write_artifact

    write_artifact(gan_like, "gan", {"g_losses": torch.zeros(1, dtype=torch.float64)}, fingerprint="x")
    cases.append((["--init", gan_like], "is a gan artifact, expected features"))
    cases.append((["--out", reference], "already exists"))
    cases.append((["--resume", "--out", tmp_path / "none.safetensors"], "nothing to resume"))
    cases.append((["--width", "-1"], "must be positive"))
    cases.append((["--data", tmp_path / "missing"], "fetch-data"))
    for extra, message in cases:
        args = ["train-features", "--data", tiny_data, *TINY, "--epochs", "1"]
        if "--out" not in extra:
            args += ["--out", tmp_path / "x.safetensors"]
        assert_error_line(cli(*args, *extra), message)
    # and through a real process: one line on stderr, exit 2, no traceback
    result = run_isl("train-features", "--data", tiny_data, *TINY, "--out", reference)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_data, tmp_path, cli, monkeypatch):
    from isl_cli.engine import features as stage

    real = stage.instance_loss
    calls = {"n": 0}

    def poisoned(logits, indices):
        calls["n"] += 1
        loss = real(logits, indices)
        return loss * float("nan") if calls["n"] > 8 else loss  # epoch 1 has 6 batches: NaN in epoch 2

    monkeypatch.setattr(stage, "instance_loss", poisoned)
    out = tmp_path / "nan.safetensors"
    result = cli("train-features", "--data", tiny_data, "--out", out, *TINY, "--epochs", "3")
    assert result.exit_code == 2
    assert "non-finite loss" in result.output and "last good checkpoint" in result.output
    partial = tmp_path / "nan.partial.safetensors"
    meta = read_header(partial, "features").meta
    assert meta["stage_epochs"] == 1 and not out.exists()
    assert torch.isfinite(load_file(str(partial))["bank.memory"]).all()


def test_unlabelled_data_trains_and_eval_says_it_cannot_score(tmp_path, cli):
    from isl_cli.data.store import Split, save_dataset

    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    train = Split(labels=torch.full((40,), -1), classes=[], images=images, name="flat", split="train")
    test = Split(labels=torch.zeros(0, dtype=torch.int64), classes=[], images=images[:0], name="flat", split="test")
    data = tmp_path / "flat"
    save_dataset(data, train, test)
    out = tmp_path / "f.safetensors"
    result = cli("train-features", "--data", data, "--out", out, *TINY, "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "cannot be scored" in result.output
    evaluated = cli("eval-knn", out, "--device", "cpu", "--quiet")
    assert evaluated.exit_code == 0
    assert "cannot be scored" in evaluated.output


def test_val_split_watches_held_out_training_images(tiny_data, tmp_path, cli):
    out = tmp_path / "v.safetensors"
    result = cli("train-features", "--data", tiny_data, "--out", out, *TINY, "--epochs", "1", "--val-split", "0.25",
                 "--eval-k", "10")
    assert result.exit_code == 0, result.output
    record = read_header(out).meta["history"][-1]
    assert record["knn_on"] == "val"


def test_init_applies_typed_optimiser_options_and_keeps_the_rest(reference, tiny_data, tmp_path, cli):
    before = read_header(reference, "features").meta
    restored_lr = before["optim"]["param_groups"][0]["lr"]
    assert restored_lr != 0.01
    typed = tmp_path / "typed.safetensors"
    result = cli("train-features", "--data", tiny_data, "--init", reference, "--out", typed, *TINY, "--epochs", "1",
                 "--eval-k", "20", "--lr", "0.01", "--momentum", "0.8", "--weight-decay", "0.001",
                 "--lr-factor", "0.5", "--lr-patience", "3")
    assert result.exit_code == 0, result.output
    assert "applied over the restored optimiser and scheduler: --lr 0.01, --momentum 0.8" in result.output
    header = read_header(typed, "features")
    record = header.meta["history"][-1]
    assert record["stage_epoch"] == 1 and record["lr"] == 0.01  # trained at the typed rate
    assert header.config["lr"] == 0.01 and header.config["lr_factor"] == 0.5 and header.config["lr_patience"] == 3
    group = header.meta["optim"]["param_groups"][0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.8, 0.001)
    assert header.meta["scheduler"]["factor"] == 0.5 and header.meta["scheduler"]["patience"] == 3
    assert header.meta["origin"]["applied_over_init"] == {"lr": 0.01, "momentum": 0.8, "weight_decay": 0.001,
                                                          "lr_factor": 0.5, "lr_patience": 3}
    # options not typed keep the restored state, and the config records the previous round's settings
    kept = tmp_path / "kept.safetensors"
    result = cli("train-features", "--data", tiny_data, "--init", typed, "--out", kept, *TINY, "--epochs", "1",
                 "--eval-k", "20")
    assert result.exit_code == 0, result.output
    assert "applied over" not in result.output
    header = read_header(kept, "features")
    assert header.meta["history"][-1]["lr"] == 0.01 and header.config["lr"] == 0.01
    assert header.config["momentum"] == 0.8 and header.meta["scheduler"]["patience"] == 3


def test_resume_refuses_a_typed_option_that_differs_from_the_checkpoint(reference, tiny_data, tmp_path, cli):
    import shutil

    out = tmp_path / "r0-features.safetensors"
    shutil.copy(reference, tmp_path / "r0-features.partial.safetensors")
    assert_error_line(cli("train-features", "--data", tiny_data, "--out", out, *TINY, *EPOCHS, "--resume",
                          "--lr", "0.5"), "--lr 0.5 (checkpoint: 0.03)", "--overwrite")
