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
