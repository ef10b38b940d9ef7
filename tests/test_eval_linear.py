"""`isl eval-linear` end to end on the tiny shapes set (features file, exported backbone), bad input, `isl run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY, assert_error_line
from isl_cli.data.sources.shapes import read_shapes
from isl_cli.data.store import save_dataset

SMALL = ["--device", "cpu", "--batch-size", "32"]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A 2-epoch features file and its exported backbone."""
    from typer.testing import CliRunner

    from isl_cli.cli.app import app

    folder = tmp_path_factory.mktemp("linear")
    features, backbone = folder / "r0-features.safetensors", folder / "backbone.safetensors"
    runner = CliRunner()
    result = runner.invoke(app, ["train-features", "--data", str(tiny_data), "--out", str(features), *TINY,
                                 "--epochs", "2", "--eval-every", "2", "--eval-k", "20"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(features), "--what", "backbone", "--out", str(backbone),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return features, backbone


def _json(result) -> dict:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_features_file_and_exported_backbone_give_the_same_probe(trained, tiny_data, cli):
    features, backbone = trained
    from_features = _json(cli("eval-linear", features, "--json", *SMALL))
    from_backbone = _json(cli("eval-linear", backbone, "--data", tiny_data, "--json", *SMALL))
    assert from_features["kind"] == "features" and from_backbone["kind"] == "backbone"
    assert from_features["layer"] == "pooled" and from_features["dim"] == 32  # 512 x width 0.0625
    assert (from_features["num_train"], from_features["num_test"], from_features["num_classes"]) == (96, 48, 10)
    assert from_features["num_val"] + from_features["num_fit"] == 96
    assert len(from_features["sweep"]) == 5
    assert from_features["weight_decay"] in [row["weight_decay"] for row in from_features["sweep"]]
    for key in ("top1", "top5", "weight_decay", "sweep"):
        assert from_features[key] == from_backbone[key], key
    assert 0.0 <= from_features["top1"] <= from_features["top5"] <= 100.0


def test_embedding_layer_seed_and_table(trained, cli):
    features, _ = trained
    embedding = _json(cli("eval-linear", features, "--layer", "embedding", "--json", *SMALL))
    assert embedding["dim"] == 16 and embedding["layer"] == "embedding"
    again = _json(cli("eval-linear", features, "--layer", "embedding", "--json", *SMALL))
    assert again["top1"] == embedding["top1"] and again["sweep"] == embedding["sweep"]  # deterministic
    other_seed = _json(cli("eval-linear", features, "--layer", "embedding", "--json", "--seed", "7", *SMALL))
    assert other_seed["seed"] == 7 and other_seed["num_val"] == embedding["num_val"]
    table = cli("eval-linear", features, *SMALL, "--quiet")
    assert table.exit_code == 0, table.stderr
    assert "test top-1" in table.stdout and "(chosen)" in table.stdout


def test_bad_inputs_exit_2_with_one_line(trained, tiny_data, tmp_path, cli):
    features, backbone = trained
    assert_error_line(cli("eval-linear", features, "--layer", "logits", *SMALL), "--layer", "pooled or embedding")
    assert_error_line(cli("eval-linear", tiny_data / "train.safetensors", *SMALL), "is a dataset artifact",
                      "features file", "exported backbone")
    assert_error_line(cli("eval-linear", backbone, *SMALL), "pass --data")
    assert_error_line(cli("eval-linear", tmp_path / "missing.safetensors", *SMALL), "no such file")
    assert_error_line(cli("eval-linear", features, "--device", "cpu", "--batch-size", "0"), "--batch-size")
    train, test = read_shapes(num_train=20, num_test=10, seed=1)
    train.labels.fill_(-1)
    test.labels.fill_(-1)
    unlabelled = tmp_path / "unlabelled"
    save_dataset(unlabelled, train, test)
    assert_error_line(cli("eval-linear", backbone, "--data", unlabelled, *SMALL), "no labels")
    other = tmp_path / "other"
    save_dataset(other, *read_shapes(num_train=20, num_test=10, seed=1))
    assert_error_line(cli("eval-linear", features, "--data", other, *SMALL), "different data set")


def test_run_reports_the_final_linear_probe(tiny_data, tmp_path, cli):
    run_dir = tmp_path / "run"
    result = cli("run", "--dataset", "shapes", "--data", tiny_data, "--run-dir", run_dir, "--rounds", "1",
                 "--epochs", "1", "--eval-every", "1", "--eval-k", "20", "--k", "20", *TINY, "--no-report",
                 "--linear-probe")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    summary = json.loads((run_dir / "summary.json").read_text())
    linear = summary["final_linear"]
    assert linear["scored"] and linear["layer"] == "pooled" and linear["num_test"] == 48
    assert json.loads((run_dir / "final-linear.json").read_text()) == linear
    assert "final linear" in result.stdout
    timings = json.loads((run_dir / "timings.json").read_text())
    assert "final-linear" in timings


def test_run_without_linear_probe_writes_none(tiny_data, tmp_path, cli):
    run_dir = tmp_path / "run"
    result = cli("run", "--dataset", "shapes", "--data", tiny_data, "--run-dir", run_dir, "--rounds", "1",
                 "--epochs", "1", "--eval-every", "1", "--eval-k", "20", "--k", "20", *TINY, "--no-report")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "final_linear" not in json.loads((run_dir / "summary.json").read_text())  # paper preset: off by default
    assert not (run_dir / "final-linear.json").exists()
