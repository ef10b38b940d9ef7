"""The stage options, declared once beside the configs: every field is an option of its stage and of `isl run`."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from conftest import TINY
from isl_cli.config import FeaturesConfig, GanConfig, MineConfig, cli_options, derived_fields

STAGES = {"train-features": FeaturesConfig, "train-gan": GanConfig, "mine-neighbors": MineConfig}


def _help_flags(command: str) -> set[str]:
    """The flags a command's --help offers (single flags: a --x/--no-x pair would fail here)."""
    from isl_cli.cli.app import app

    # 80 columns, as the help test: typer reads TERMINAL_WIDTH once, when its help rendering is first imported
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    assert "/--" not in result.output
    return set(re.findall(r"^│ (--[a-z][a-z0-9-]*)", result.output, flags=re.M))


def test_every_field_is_an_option_but_the_derived_image_size():
    for cls in STAGES.values():
        options = set(cli_options(cls))
        assert options | derived_fields(cls) == {f.name for f in fields(cls)}, cls
        assert not options & derived_fields(cls)
    assert set().union(*(derived_fields(cls) for cls in STAGES.values())) == {"image_size"}


@pytest.mark.parametrize("command", STAGES)
def test_each_stage_command_offers_every_field_of_its_config(command):
    flags = _help_flags(command)
    missing = {name: opt.flag for name, opt in cli_options(STAGES[command]).items() if opt.flag not in flags}
    assert not missing


def test_isl_run_offers_every_field_of_every_stage():
    flags = _help_flags("run")
    for cls in STAGES.values():
        missing = {name: opt.run_flag for name, opt in cli_options(cls).items() if opt.run_flag not in flags}
        assert not missing, cls.__name__
    for flag in ("--gan-epochs", "--gan-lr", "--gan-max-epochs", "--bank-momentum", "--momentum", "--lr-factor",
                 "--lr-patience", "--no-sync-bn", "--variant"):
        assert flag in flags


def _capture_jobs(monkeypatch, module, name: str) -> list:
    """Replace the engine entry point `module.name` by one that records its job and stops the command."""
    jobs = []

    def capture(job):
        jobs.append(job)
        raise typer.Exit(0)

    monkeypatch.setattr(module, name, capture)
    return jobs


def test_options_typed_in_isl_run_reach_every_stage_config(tiny_data, tmp_path, cli, monkeypatch):
    from isl_cli.engine import schedule

    jobs = _capture_jobs(monkeypatch, schedule, "run_schedule")
    monkeypatch.chdir(tmp_path)
    result = cli("run", "--data", tiny_data, "--run-dir", tmp_path / "r", "--device", "cpu", "--quiet", "--no-report",
                 "--momentum", "0.8", "--lr-factor", "0.5", "--gan-lr", "2e-4", "--tau", "0.4", "--batch-size", "64",
                 "--no-sync-bn", "--workers", "1")
    assert result.exit_code == 0, (result.output, result.exception)
    config = jobs[0].config
    features, gan, mine = config.features, config.gan, config.mine
    assert (features.momentum, features.lr_factor, gan.lr, mine.tau) == (0.8, 0.5, 2e-4, 0.4)
    assert features.batch_size == gan.batch_size == mine.batch_size == 64
    assert features.num_workers == gan.num_workers == mine.num_workers == 1
    assert features.sync_bn is False and features.lr == 0.03 and gan.max_epochs == 200  # untyped: the preset's


def test_isl_run_names_the_dataset_and_run_folder_after_its_data_folder(tiny_data, tmp_path, cli, monkeypatch):
    import shutil

    from isl_cli.engine import schedule

    jobs = _capture_jobs(monkeypatch, schedule, "run_schedule")
    photos = tmp_path / "photos32"
    shutil.copytree(tiny_data, photos)
    monkeypatch.chdir(tmp_path)
    result = cli("run", "--data", photos, "--device", "cpu", "--quiet", "--no-report")
    assert result.exit_code == 0, (result.output, result.exception)
    assert jobs[0].config.dataset == "photos32" and jobs[0].run_dir == Path("runs") / "photos32"  # not runs/shapes


def test_stage_options_reach_the_job_with_what_was_typed(tiny_data, tmp_path, cli, monkeypatch):
    from isl_cli.engine import features

    jobs = _capture_jobs(monkeypatch, features, "train_features")
    result = cli("train-features", "--data", tiny_data, *TINY, "--lr", "0.1", "--channels-last", "--no-sync-bn",
                 "--out", tmp_path / "f.safetensors")
    assert result.exit_code == 0, (result.output, result.exception)
    job = jobs[0]
    assert (job.config.lr, job.config.channels_last, job.config.sync_bn, job.config.momentum) == (0.1, True, False, 0.9)
    # --seed is always passed (its default 0), as before the options were generated
    assert job.given == {"width", "low_dim", "batch_size", "lr", "channels_last", "sync_bn", "seed"}


def test_a_run_flag_that_two_stages_would_share_by_accident_is_refused():
    from dataclasses import dataclass

    from isl_cli.cli.options import run_options
    from isl_cli.config import option

    @dataclass(frozen=True)
    class A:
        rate: float = option(0.1, "--rate", "A's rate.")

    @dataclass(frozen=True)
    class B:
        rate: float = option(0.2, "--rate", "B's rate.")

    def command(changes=None) -> None:
        """A command."""

    with pytest.raises(TypeError, match="--rate"):
        run_options(A, B)(command)
    run_options(A)(command)  # alone, fine


def test_gan_errors_in_isl_run_name_its_run_flags():
    from isl_cli.config import run_flags_named

    assert run_flags_named("--lr must be positive; --max-epochs too; --epochs 0", GanConfig) == (
        "--gan-lr must be positive; --gan-max-epochs too; --gan-epochs 0")
