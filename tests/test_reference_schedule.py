"""Settings that follow the reference's schedule (issue 10): one batch size for every ImageNet stage."""

from __future__ import annotations

import pytest

from isl_cli.config import preset_configs


@pytest.mark.parametrize("preset", ["paper", "quick"])
def test_imagenet_stages_share_the_reference_loader_batch_of_256(preset):
    features, gan, mine = preset_configs(preset, imagenet=True)
    assert (features.batch_size, gan.batch_size, mine.batch_size) == (256, 256, 256)
    features, gan, mine = preset_configs(preset, imagenet=False)
    assert (features.batch_size, gan.batch_size, mine.batch_size) == (128, 128, 128)


def test_run_batch_size_sets_every_stage(tiny_data, tmp_path, cli, monkeypatch):
    import isl_cli.engine.schedule as schedule

    seen = {}

    def capture(job):
        seen["config"] = job.config
        raise SystemExit(0)

    monkeypatch.setattr(schedule, "run_schedule", capture)
    result = cli("run", "--data", tiny_data, "--run-dir", tmp_path / "run", "--batch-size", "32", "--device", "cpu")
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.features.batch_size, config.gan.batch_size, config.mine.batch_size) == (32, 32, 32)


# --------------------------------------------------------------------------- ImageNet settings are said


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """24 + 8 shapes images: enough for one step of the full-size ImageNet ResNet-18 on a CPU."""
    from isl_cli.data.sources.shapes import read_shapes
    from isl_cli.data.store import save_dataset

    folder = tmp_path_factory.mktemp("data") / "small"
    train, test = read_shapes(num_train=24, num_test=8, seed=4)
    save_dataset(folder, train, test, config={"name": "shapes", "num_train": 24, "num_test": 8})
    return folder


def _first_line(result) -> str:
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()][0]


def test_every_stage_says_first_that_it_uses_the_imagenet_settings(small_data, tmp_path):
    from conftest import run_isl

    features, gan = tmp_path / "r0-features.safetensors", tmp_path / "r0-gan.safetensors"
    line = _first_line(run_isl("train-features", "--data", small_data, "--out", features, "--variant", "imagenet",
                               "--epochs", "1", "--batch-size", "8", "--low-dim", "16", "--eval-k", "5",
                               "--device", "cpu", "--quiet"))
    assert line.startswith("ImageNet settings") and "T 0.07" in line and "--variant cifar" in line
    line = _first_line(run_isl("train-gan", "--features", features, "--out", gan, "--epochs", "1", "--num-draws", "8",
                               "--batch-size", "8", "--device", "cpu", "--quiet"))
    assert line.startswith("ImageNet settings") and "batch 8" in line and "--variant cifar" in line
    line = _first_line(run_isl("mine-neighbors", "--features", features, "--gan", gan, "--max-passes", "1",
                               "--num-draws", "8", "--batch-size", "8", "--device", "cpu", "--quiet"))
    assert line.startswith("ImageNet settings") and "tau 0.3" in line and "R 0.3" in line


def test_cifar_settings_say_nothing_and_help_tells_the_imagenet_ones(tiny_data, tmp_path, cli):
    from conftest import TINY

    result = cli("train-features", "--data", tiny_data, "--out", tmp_path / "f.safetensors", *TINY, "--epochs", "1")
    assert result.exit_code == 0 and "ImageNet settings" not in result.output
    for command in ("train-features", "train-gan", "mine-neighbors", "run"):
        text = " ".join(cli(command, "--help").output.split())
        assert "ImageNet settings" in text, command


def test_run_summary_says_imagenet_settings(tmp_path, capsys):
    import json

    from isl_cli.cli.run import print_summary
    from isl_cli.config import RunConfig, to_dict
    from isl_cli.engine.run_summary import summarize

    features, gan, mine = preset_configs("paper", imagenet=True)
    config = RunConfig(dataset="imagenet", features=features, gan=gan, mine=mine)
    (tmp_path / "config.json").write_text(json.dumps({"config": to_dict(config), "data_dir": "x"}))
    summary = summarize(tmp_path, 1)
    assert summary["settings"] == "imagenet" and "T 0.07" in summary["settings_note"]
    print_summary(summary)
    assert "ImageNet settings" in " ".join(capsys.readouterr().err.split())
    features, gan, mine = preset_configs("paper", imagenet=False)
    (tmp_path / "config.json").write_text(json.dumps({"config": to_dict(RunConfig(features=features)), "data_dir": "x"}))
    assert summarize(tmp_path, 1)["settings"] == "cifar" and summarize(tmp_path, 1)["settings_note"] is None
