"""Mining's two miners end to end: the similarity miner against a brute-force oracle, the GAN miner's tally of
rejections, and the stop after passes that add nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_GAN, assert_error_line
from isl_cli.artifacts import read_header, write_artifact
from isl_cli.mining import quota

import oracles


def _pairs(path: Path) -> set[tuple[int, int]]:
    return {tuple(p) for p in load_file(str(path))["pairs"].tolist()}


@pytest.mark.parametrize("round_index", [0, 2])
def test_similarity_miner_adds_what_the_brute_force_oracle_adds(features, tmp_path, cli, round_index):
    bank = load_file(str(features))["bank.memory"]  # (96, 16)
    base = tmp_path / "base.safetensors"
    start = torch.tensor([[0, 5], [7, 3], [10, 11]])  # a graph to grow: its edges are never chosen again
    write_artifact(base, "neighbors", {"pairs": start}, fingerprint=read_header(features).fingerprint,
                   meta={"num_images": 96, "round": 0})
    out = tmp_path / "mined.safetensors"
    result = cli("mine-neighbors", "--features", features, "--neighbors", base, "--out", out, "--miner", "similarity",
                 "--round", str(round_index), "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    target = quota(round_index, 96)
    expected = oracles.similarity_miner_oracle(bank, start, target)
    assert _pairs(out) == expected
    meta = read_header(out, "neighbors").meta
    assert meta["reached_quota"] and meta["stats"]["passes"] == 1 and meta["stats"]["miner"] == "similarity"
    assert target < meta["stats"]["entries"] <= target + 2  # just above the quota, as the GAN's per-batch check
    assert meta["gan"] is None and "proposals" not in meta["stats"]
    # the rival scored beside it is the same rule on the same bank: the same precision
    assert meta["stats"]["new_precision"] == pytest.approx(meta["stats"]["similarity_precision"])


def test_similarity_miner_refuses_a_gan_and_isl_run_refuses_gan_options(features, gan, tmp_path, cli):
    assert_error_line(cli("mine-neighbors", "--features", features, "--gan", gan, "--miner", "similarity",
                          "--out", tmp_path / "x.safetensors"), "--gan is not used by --miner similarity")
    assert_error_line(cli("mine-neighbors", "--features", features, "--miner", "and", "--out",
                          tmp_path / "y.safetensors"), "--miner must be gan, similarity or none")
    assert_error_line(cli("run", "--miner", "similarity", "--gan-epochs", "3", "--run-dir", tmp_path / "run"),
                      "--miner similarity trains no GAN")
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "run").exists()


def test_gan_miner_counts_every_rejection(features, gan, tmp_path, cli):
    out = tmp_path / "counted.safetensors"
    result = cli("mine-neighbors", "--features", features, "--gan", gan, "--out", out, *TINY_GAN,
                 "--tau", "0.0", "--base-radius", "0.0", "--max-passes", "2", "--quota-check", "batch")
    assert result.exit_code == 0, result.output
    stats = read_header(out).meta["stats"]
    p = stats["proposals"]
    # every scored image is either rejected by the score or looks at its top 10; every candidate is either outside
    # the radius or proposed; every proposed pair either joined the graph or was known
    assert p["candidates"] == 10 * (p["images"] - p["rejected_score"])
    assert p["candidates"] == p["rejected_radius"] + p["proposed"]
    assert p["proposed"] == p["added"] + p["rejected_known"]
    assert p["added"] == stats["new_pairs"] > 0 and 0.0 <= p["score_mean"] <= p["score_max"] <= 1.0
    assert "rejected: score <= tau" in result.output and "outside the radius" in result.output
    assert "rejected: neighbours already" in cli("inspect", out).output


def test_mining_stops_after_empty_passes_and_says_why(features, gan, tmp_path, cli):
    out = tmp_path / "empty.safetensors"
    # tau 0.999: the discriminator trusts no proxy, so no pass can add a pair
    result = cli("mine-neighbors", "--features", features, "--gan", gan, "--out", out, *TINY_GAN,
                 "--tau", "0.999", "--stop-after-empty", "2", "--max-passes", "50")
    assert result.exit_code == 0, result.output
    meta = read_header(out).meta
    stats = meta["stats"]
    assert stats["passes"] == 2 and stats["stopped_empty"] and not meta["reached_quota"]
    assert "2 passes in a row that added no pair" in stats["reason"]
    p = stats["proposals"]
    assert p["images"] == 2 * 96 and p["rejected_score"] == p["images"] and p["added"] == 0
    assert "the discriminator trusts no proxy" in stats["rejections"] and "--miner similarity" in stats["rejections"]
    assert "passes in a row that added no pair" in result.output
    # 0 keeps the reference: passes go on to the cap
    capped = tmp_path / "capped.safetensors"
    result = cli("mine-neighbors", "--features", features, "--gan", gan, "--out", capped, *TINY_GAN,
                 "--tau", "0.999", "--max-passes", "3")
    assert result.exit_code == 0, result.output
    stats = read_header(capped).meta["stats"]
    assert stats["passes"] == 3 and not stats["stopped_empty"] and "cap of 3 passes" in stats["reason"]


def test_isl_run_table_says_a_round_stopped_on_empty_passes(tiny_data, tmp_path, cli):
    run_dir = tmp_path / "run"
    result = cli("run", "--data", tiny_data, "--run-dir", run_dir, "--preset", "quick", "--rounds", "2",
                 "--epochs", "1", "--gan-epochs", "1", "--tau", "0.999", "--max-passes", "4", "--stop-after-empty",
                 "2", "--width", "0.0625", "--low-dim", "16", "--batch-size", "16", "--num-draws", "64",
                 "--no-linear-probe", "--no-report", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    summary = __import__("json").loads((run_dir / "summary.json").read_text())
    row = summary["rounds"][0]
    assert row["mined_stopped_empty"] and row["mined_passes"] == 2 and row["mined_new_pairs"] == 0
    assert "round 0 mining: stopped after 2 passes in a row that added no pair" in " ".join(result.output.split())


def test_isl_run_with_the_similarity_miner_trains_no_gan(tiny_data, tmp_path, cli):
    run_dir = tmp_path / "run"
    result = cli("run", "--data", tiny_data, "--run-dir", run_dir, "--preset", "quick", "--rounds", "2",
                 "--epochs", "1", "--miner", "similarity", "--width", "0.0625", "--low-dim", "16", "--batch-size",
                 "16", "--no-linear-probe", "--no-report", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert not list(run_dir.glob("*gan*"))
    stats = read_header(run_dir / "r0-neighbors.safetensors").meta["stats"]
    assert stats["miner"] == "similarity" and stats["entries"] > quota(0, 96)


def test_the_control_and_a_miner_start_from_one_adopted_round_0(tiny_data, tmp_path, cli):
    common = ["--data", tiny_data, "--preset", "quick", "--rounds", "2", "--epochs", "1", "--width", "0.0625",
              "--low-dim", "16", "--batch-size", "16", "--no-linear-probe", "--no-report", "--device", "cpu",
              "--quiet"]
    assert cli("run", *common, "--rounds", "1", "--run-dir", tmp_path / "r0").exit_code == 0
    round0 = tmp_path / "r0" / "r0-features.safetensors"
    before = round0.read_bytes()
    control = tmp_path / "control"
    result = cli("run", *common, "--miner", "none", "--run-dir", control, "--start-from", round0)
    assert result.exit_code == 0, result.output
    # the control: round 0 adopted as it is, no GAN, no mining, round 1 continues it without neighbours
    assert (control / "r0-features.safetensors").read_bytes() == before == round0.read_bytes()
    assert not list(control.glob("*gan*")) and not list(control.glob("*neighbors*"))
    assert {"r0-features", "r1-features"} <= set(__import__("json").loads((control / "timings.json").read_text()))
    meta = read_header(control / "r1-features.safetensors").meta
    assert meta["round"] == 1 and not meta["graph_entries"] and meta["origin"]["init_id"]
    mined = tmp_path / "similarity"
    assert cli("run", *common, "--miner", "similarity", "--run-dir", mined, "--start-from", round0).exit_code == 0
    assert read_header(mined / "r1-features.safetensors").meta["graph_entries"] > quota(0, 96)
    # a round 0 made with other options, or a later round, is refused before any work
    assert_error_line(cli("run", *common, "--width", "0.125", "--run-dir", tmp_path / "x", "--start-from", round0),
                      "was trained with other settings: width 0.0625 (this run: 0.125)")
    assert_error_line(cli("run", *common, "--run-dir", tmp_path / "y", "--start-from",
                          control / "r1-features.safetensors"), "is round 1, not a round 0")
    assert not (tmp_path / "x" / "r1-features.safetensors").exists()
    assert_error_line(cli("mine-neighbors", "--features", round0, "--miner", "none"), "--miner none mines nothing")


def test_gan_round_0_trains_at_least_min_steps(features, tmp_path, cli):
    out = tmp_path / "floor.safetensors"
    # 96 images in batches of 16: 6 steps an epoch, so 90 steps are 15 epochs (the reference's floor is 10)
    result = cli("train-gan", "--features", features, "--out", out, *TINY_GAN, "--min-steps", "90", "--max-epochs",
                 "30")
    assert result.exit_code == 0, result.output
    meta = read_header(out).meta
    assert meta["epochs"] >= 15 and "at least 90 steps" in result.output
    assert_error_line(cli("train-gan", "--features", features, "--out", tmp_path / "x.safetensors",
                          "--min-steps", "-1"), "--min-steps must be an integer from 0 to 1000000000, got -1")


def test_exact_quota_check_adds_just_what_the_quota_needs(features, gan, tmp_path, cli):
    out = tmp_path / "exact.safetensors"
    result = cli("mine-neighbors", "--features", features, "--gan", gan, "--out", out, *TINY_GAN,
                 "--tau", "0.0", "--base-radius", "0.0", "--quota-check", "exact")
    assert result.exit_code == 0, result.output
    stats = read_header(out).meta["stats"]
    # quota (0 + 1) * 0.5 * 96 = 48 entries: 25 pairs take the graph to 50, as the similarity miner would
    assert stats["entries"] == 50 and stats["new_pairs"] == 25 and stats["passes"] == 1
