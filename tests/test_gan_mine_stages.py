"""train-gan and mine-neighbors end to end on a tiny data set."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import GAN_FAST, TINY, TINY_GAN, assert_error_line, run_isl, spawn_isl
from isl_cli.artifacts import read_header, write_artifact


def test_gan_artifact_holds_networks_losses_and_reason(gan, features):
    header = read_header(gan, "gan")
    meta = header.meta
    assert meta["complete"] and meta["epochs"] == 3 and meta["round"] == 0
    assert "fixed" in meta["stop_reason"]
    assert meta["features_id"] == read_header(features).meta["features_id"]
    tensors = load_file(str(gan))
    assert tensors["g_losses"].shape == (3,) and tensors["d_losses"].shape == (3,)
    assert any(k.startswith("generator.") for k in tensors) and any(k.startswith("discriminator.") for k in tensors)
    assert any(k.startswith("optim_g.") for k in tensors) and any(k.startswith("optim_d.") for k in tensors)


def test_gan_paper_rule_is_capped_and_says_so(features, tmp_path, cli):
    out = tmp_path / "capped.safetensors"
    result = cli("train-gan", "--features", features, "--out", out, *TINY_GAN, "--max-epochs", "2")
    assert result.exit_code == 0, result.output
    reason = read_header(out).meta["stop_reason"]
    assert "cap" in reason and "2" in reason  # round 0 never stops by the paper's rule before 10 epochs
    assert "stopped after 2 epochs" in result.output


def test_gan_without_features_says_train_features_first(tmp_path, cli):
    assert_error_line(cli("train-gan", *TINY_GAN), "run `isl train-features` first")
    assert_error_line(cli("train-gan", "--features", tmp_path / "nope.safetensors", *TINY_GAN),
                      "run `isl train-features` first")


def test_gan_ctrl_c_then_resume_equals_uninterrupted(features, gan, tmp_path):
    out = tmp_path / "r0-gan.safetensors"
    partial = tmp_path / "r0-gan.partial.safetensors"
    proc = spawn_isl("train-gan", "--features", features, "--out", out, *TINY_GAN, *GAN_FAST, "--epochs", "3")
    start = time.time()
    while not partial.exists():
        assert proc.poll() is None and time.time() - start < 120, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr
    resumed = run_isl("train-gan", "--features", features, "--out", out, *TINY_GAN, *GAN_FAST, "--epochs", "3",
                      "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(str(out)), load_file(str(gan))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_mining_grows_graph_symmetrically_and_reports_precision(features, gan, tmp_path, cli):
    out = tmp_path / "r0-neighbors.safetensors"
    # a low threshold and radius so that the tiny, barely trained model proposes pairs (its proxies all sit
    # near one bank row, so a whole pass would make that row everyone's neighbour: stop at the quota's batch)
    result = cli("mine-neighbors", "--features", features, "--gan", gan, "--out", out, *TINY_GAN,
                 "--tau", "0.0", "--base-radius", "0.0", "--max-passes", "2", "--quota-check", "batch")
    assert result.exit_code == 0, result.output
    header = read_header(out, "neighbors")
    stats = header.meta["stats"]
    pairs = load_file(str(out))["pairs"]
    assert len(pairs) > 0 and (pairs[:, 0] != pairs[:, 1]).all()
    assert stats["entries"] == 2 * len(pairs) > 48  # quota (0 + 1) * 0.5 * 96 = 48 exceeded
    assert header.meta["round"] == 0 and header.meta["reached_quota"]
    assert 0.0 <= stats["precision"] <= 1.0 and 0.0 < stats["chance_precision"] < 0.2
    assert stats["new_pairs"] == len(pairs)
    rounds = load_file(str(out))["round_added"]
    assert (rounds == 0).all()
    assert "precision" in result.output

    # the rival: as many pairs by plain similarity in the same bank (the round-0 graph is empty), scored alike
    from isl_cli.data.store import load_split
    from isl_cli.similarity_pairs import most_similar_pairs, pair_precision

    bank = load_file(str(features))["bank.memory"]
    labels = load_split(read_header(features).meta["dataset"], "train").labels
    rival, _ = most_similar_pairs(bank, len(pairs))
    assert stats["similarity_pairs"] == len(pairs)
    assert stats["similarity_precision"] == pytest.approx(pair_precision(rival, labels))
    assert "plain similarity" in result.output and "never for mining" in result.output
    shown = cli("inspect", out)
    assert shown.exit_code == 0 and "plain similarity" in shown.output and "by chance" in shown.output

    # a second mining from this graph keeps every old pair and never touches the old file
    before = out.read_bytes()
    grown = tmp_path / "grown.safetensors"
    result = cli("mine-neighbors", "--features", features, "--gan", gan, "--neighbors", out, "--out", grown,
                 *TINY_GAN, "--tau", "0.0", "--base-radius", "0.0", "--max-passes", "1", "--round", "1",
                 "--quota-check", "batch")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == before
    old = {tuple(p) for p in pairs.tolist()}
    new = {tuple(p) for p in load_file(str(grown))["pairs"].tolist()}
    assert old <= new
    # the rival never picks an existing edge: it is scored on as many pairs as were new, outside the old graph
    grown_stats = read_header(grown, "neighbors").meta["stats"]
    assert grown_stats["similarity_pairs"] == grown_stats["new_pairs"]


def test_unreachable_quota_stops_at_cap_and_still_writes(features, gan, tmp_path, cli):
    out = tmp_path / "capped.safetensors"
    result = cli("mine-neighbors", "--features", features, "--gan", gan, "--out", out, *TINY_GAN,
                 "--tau", "0.999", "--max-passes", "1")
    assert result.exit_code == 0, result.output
    assert "below the quota" in result.output
    meta = read_header(out).meta
    assert not meta["reached_quota"] and meta["stats"]["passes"] == 1


def test_mining_refuses_mismatched_artifacts(features, gan, tiny_data, tmp_path, cli):
    # a GAN trained on other features
    other_features = tmp_path / "other-features.safetensors"
    result = cli("train-features", "--data", tiny_data, "--out", other_features, *TINY, "--epochs", "1",
                 "--seed", "5")
    assert result.exit_code == 0, result.output
    assert_error_line(cli("mine-neighbors", "--features", other_features, "--gan", gan, "--out",
                          tmp_path / "x.safetensors", *TINY_GAN), "trained on other features")
    # a neighbours file of another data set
    foreign = tmp_path / "foreign.safetensors"
    write_artifact(foreign, "neighbors", {"pairs": torch.tensor([[0, 1]])}, fingerprint="ffffffffffffffff",
                   meta={"num_images": 96})
    assert_error_line(cli("mine-neighbors", "--features", features, "--gan", gan, "--neighbors", foreign, "--out",
                          tmp_path / "y.safetensors", *TINY_GAN), "different data set")
    # the same file as input and output
    assert_error_line(cli("mine-neighbors", "--features", features, "--gan", gan, "--neighbors", foreign, "--out",
                          foreign, *TINY_GAN), "is also an input of this command")
    # a gan file where features are expected
    assert_error_line(cli("mine-neighbors", "--features", gan, "--gan", gan, "--out", tmp_path / "z.safetensors",
                          *TINY_GAN), "is a gan artifact, expected features")


def test_moved_data_set_is_named_and_found_with_data_option(features, gan, tiny_data, tmp_path, cli):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(tiny_data, moved)
    copy = tmp_path / "r0-features.safetensors"
    header = read_header(features)
    tensors = load_file(str(features))
    meta = dict(header.meta, dataset=str(tmp_path / "gone"))  # the folder it recorded no longer exists
    write_artifact(copy, "features", tensors, config=header.config, fingerprint=header.fingerprint, meta=meta)
    assert_error_line(cli("mine-neighbors", "--features", copy, "--gan", gan, "--out", tmp_path / "n.safetensors"),
                      "pass --data DIR")
    found = cli("train-gan", "--features", copy, "--data", moved, "--out", tmp_path / "g.safetensors", *TINY_GAN,
                *GAN_FAST, "--epochs", "1")
    assert found.exit_code == 0, found.output


def test_quota_checked_per_batch_stops_within_the_pass(features, gan, tmp_path, cli):
    common = ["--features", features, "--gan", gan, *TINY_GAN, "--tau", "0.0", "--base-radius", "0.0"]
    per_pass, per_batch = tmp_path / "pass.safetensors", tmp_path / "batch.safetensors"
    assert cli("mine-neighbors", *common, "--out", per_pass).exit_code == 0
    result = cli("mine-neighbors", *common, "--out", per_batch, "--quota-check", "batch")
    assert result.exit_code == 0, result.output
    whole, first = read_header(per_pass).meta["stats"], read_header(per_batch).meta["stats"]
    assert first["passes"] == 1 and first["entries"] > 48  # the quota (0 + 1) * 0.5 * 96 = 48 is exceeded
    assert first["entries"] <= 2 * 16 * 10 < whole["entries"]  # by one batch of 16 images x top-10 at most
    assert_error_line(cli("mine-neighbors", *common, "--out", tmp_path / "x.safetensors", "--quota-check", "never"),
                      "--quota-check must be pass, batch or exact")


def _over_quota_neighbors(path: Path, features: Path) -> torch.Tensor:
    """A round-0 graph of 60 pairs: 120 entries, already over round 0's quota of 48 (96 images)."""
    pairs = torch.stack([torch.arange(0, 60), torch.arange(1, 61)], dim=1)  # (60, 2)
    write_artifact(path, "neighbors", {"pairs": pairs}, fingerprint=read_header(features).fingerprint,
                   meta={"num_images": 96, "round": 0})
    return pairs


def test_a_graph_already_over_the_quota_still_gets_one_pass_as_the_reference(features, gan, tmp_path, cli):
    # the reference's mining loop is a do-while: one pass runs before the quota is first checked
    base = tmp_path / "over.safetensors"
    old = _over_quota_neighbors(base, features)
    common = ["--features", features, "--gan", gan, "--neighbors", base, "--round", "0", *TINY_GAN,
              "--tau", "0.0", "--base-radius", "0.0"]
    out = tmp_path / "mined.safetensors"
    result = cli("mine-neighbors", *common, "--out", out)
    assert result.exit_code == 0, result.output
    stats = read_header(out).meta["stats"]
    assert stats["passes"] == 1 and stats["new_pairs"] > 0 and stats["entries"] > 2 * len(old)
    # per-batch checks: the first batch still runs (at most one batch of 16 images x top-10 new pairs)
    out_batch = tmp_path / "mined-batch.safetensors"
    result = cli("mine-neighbors", *common, "--out", out_batch, "--quota-check", "batch")
    assert result.exit_code == 0, result.output
    batch_stats = read_header(out_batch).meta["stats"]
    assert batch_stats["passes"] == 1 and 0 < batch_stats["new_pairs"] <= 16 * 10 < stats["new_pairs"]


@pytest.fixture(scope="module")
def one_thread_pair(tiny_data, tmp_path_factory) -> tuple[Path, Path]:
    """Features and GAN as the module's fixtures, but made with one thread: their float sums, hence the tiny GAN's
    proxies, are then the same on every machine, whatever its core count."""
    folder = tmp_path_factory.mktemp("gm1")
    features, gan = folder / "r0-features.safetensors", folder / "r0-gan.safetensors"
    one = ["--threads", "1"]
    result = run_isl("train-features", "--data", tiny_data, "--out", features, *TINY, "--epochs", "2", "--eval-k", "20",
                     *one)
    assert result.returncode == 0, result.stderr
    result = run_isl("train-gan", "--features", features, "--out", gan, *TINY_GAN, *GAN_FAST, "--epochs", "3", *one)
    assert result.returncode == 0, result.stderr
    return features, gan


def test_mining_killed_after_a_pass_resumes_at_the_next_pass_bit_exact(one_thread_pair, tmp_path):
    # a quota out of reach (100 x 96 entries > 96 x 95), so all 4 passes run; the radius is the largest that
    # still admits pairs for this tiny one-thread GAN (74, 104, 116, 126 entries after passes 1-4), so no row
    # becomes everyone's neighbour (then no negative could be drawn)
    features, gan = one_thread_pair
    args = ["mine-neighbors", "--features", features, "--gan", gan, *TINY_GAN, "--tau", "0.0", "--base-radius", "0.69",
            "--per-round", "100", "--max-passes", "4", "--threads", "1"]
    whole = tmp_path / "whole.safetensors"
    attempt = run_isl(*args, "--out", whole)
    assert attempt.returncode == 0, attempt.stderr
    stats = read_header(whole).meta["stats"]
    assert stats["passes"] == 4 and stats["new_pairs"] > 0
    out, partial = tmp_path / "cut.safetensors", tmp_path / "cut.partial.safetensors"
    proc = spawn_isl(*args, "--out", out)
    start = time.time()
    while not partial.exists():
        assert proc.poll() is None and time.time() - start < 120, proc.stderr.read()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    saved = read_header(partial, "neighbors").meta
    assert saved["complete"] is False and 1 <= saved["passes"] < 4
    # the checkpoint is no neighbours file for training, and a plain re-run does not discard it
    refused = run_isl(*args, "--out", out)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run_isl(*args, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"after mining pass {saved['passes']}" in resumed.stderr and not partial.exists()
    a, b = load_file(str(out)), load_file(str(whole))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_header(out).meta["stats"] == read_header(whole).meta["stats"]


def test_gan_init_applies_a_typed_lr_and_otherwise_keeps_the_restored_one(features, gan, tmp_path, cli):
    assert read_header(gan).config["lr"] == 0.01  # GAN_FAST
    typed = tmp_path / "typed.safetensors"
    result = cli("train-gan", "--features", features, "--init", gan, "--out", typed, *TINY_GAN, "--epochs", "1",
                 "--lr", "0.002")
    assert result.exit_code == 0, result.output
    assert "applied over the restored Adam state: --lr 0.002" in result.output
    header = read_header(typed)
    assert header.config["lr"] == 0.002 and header.meta["origin"]["applied_over_init"] == {"lr": 0.002}
    assert {g["lr"] for key in ("optim_g", "optim_d") for g in header.meta[key]["param_groups"]} == {0.002}
    kept = tmp_path / "kept.safetensors"
    result = cli("train-gan", "--features", features, "--init", gan, "--out", kept, *TINY_GAN, "--epochs", "1")
    assert result.exit_code == 0, result.output
    header = read_header(kept)
    assert header.config["lr"] == 0.01  # the restored rate, recorded as such (not the preset's 1e-4)
    assert {g["lr"] for g in header.meta["optim_g"]["param_groups"]} == {0.01}
