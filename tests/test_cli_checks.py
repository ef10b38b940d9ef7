"""Every bad option is one line and exit 2, before any work; every --help reads cleanly at 80 columns."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TINY, assert_error_line, run_isl

# ------------------------------------------------------------------ help at 80 columns


def _commands():
    from isl_cli.cli.commands import COMMANDS

    return [name for name, *_ in COMMANDS]


@pytest.mark.parametrize("command", _commands())
def test_help_at_80_columns_is_whole_and_every_option_has_help(command):
    import typer

    from isl_cli.cli.app import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "…" not in text, text  # nothing cut
    assert "<bool>" not in text and "list[" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    # the help text starts by column 40 on every option row: about 40 columns are left for it
    for line in text.splitlines():
        parts = re.split(r"\s{2,}", line[2:].rstrip("│ "))
        if line.startswith("│ -") and len(parts) >= 2:
            assert line.index(parts[-1], 2) <= 40, line
    click_command = typer.main.get_command(app).commands[command]
    for param in click_command.params:
        assert (param.help or "").strip(), f"{command} {param.name}: no help text"


# ------------------------------------------------------------------ isl run: every invalid option, before any work

RUN_BAD = [
    (["--k", "0"], "--k"),
    (["--rounds", "0"], "--rounds"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--temperature", "nan"], "--temperature"),
    (["--weight-decay", "nan"], "--weight-decay"),
    (["--hp-weight", "-1"], "--hp-weight"),
    (["--eval-every", "0"], "--eval-every"),
    (["--eval-k", "0"], "--eval-k"),
    (["--val-split", "nan"], "--val-split"),
    (["--val-split", "1"], "--val-split"),
    (["--width", "0.001"], "--width"),
    (["--width", "nan"], "--width"),
    (["--width", "1000"], "memory"),
    (["--low-dim", "0"], "--low-dim"),
    (["--batch-size", "1"], "batch norm"),
    (["--batch-size", "0"], "--batch-size"),
    (["--arch", "vgg"], "--arch"),
    (["--amp", "fp8"], "--amp"),
    (["--gan-lr", "nan"], "--gan-lr"),
    (["--gan-epochs", "0"], "--gan-epochs"),
    (["--gan-max-epochs", "0"], "--gan-max-epochs"),
    (["--num-draws", "0"], "--num-draws"),
    (["--tau", "nan"], "--tau"),
    (["--tau", "1"], "--tau"),
    (["--base-radius", "inf"], "--base-radius"),
    (["--top-k", "0"], "--top-k"),
    (["--per-round", "nan"], "--per-round"),
    (["--per-round", "inf"], "--per-round"),
    (["--max-passes", "0"], "--max-passes"),
    (["--quota-check", "never"], "--quota-check"),
    (["--workers", "-1"], "--workers"),
    (["--preset", "fast"], "preset"),
    (["--device", "tpu"], "device"),
    (["--run-dir", "/proc/isl-run"], "cannot write"),
]


@pytest.mark.parametrize("extra, fragment", RUN_BAD, ids=[" ".join(a) for a, _ in RUN_BAD])
def test_run_refuses_every_invalid_option_at_once(extra, fragment, tmp_path, cli, monkeypatch):
    from isl_cli.data.sources import fetch
    from isl_cli.engine import schedule

    def no_work(*args, **kwargs):  # reading or fetching data, or training, means the check came too late
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(fetch, "prepare_dataset", no_work)
    monkeypatch.setattr(schedule, "run_schedule", no_work)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "x"
    start = time.perf_counter()
    result = cli("run", "--dataset", "shapes", "--root", tmp_path / "data", "--run-dir", run_dir, "--device", "cpu",
                 "--quiet", "--no-report", *extra)
    assert time.perf_counter() - start < 5  # "within a second" on an idle machine; this one is shared
    assert_error_line(result, fragment)
    assert not run_dir.exists() and not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def test_run_refuses_in_a_real_process_with_one_line(tmp_path):
    result = run_isl("run", "--dataset", "shapes", "--root", tmp_path / "data", "--run-dir", tmp_path / "r",
                     "--k", "0", "--device", "cpu", "--quiet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ the stages


STAGE_BAD = [
    (["--temperature", "nan"], "--temperature"),
    (["--lr", "nan"], "--lr"),
    (["--momentum", "nan"], "--momentum"),
    (["--bank-momentum", "nan"], "--bank-momentum"),
    (["--width", "0.001"], "the smallest width"),
    (["--width", "1000"], "of memory"),
    (["--batch-size", "1"], "batch norm"),
    (["--out", "/proc/x.safetensors"], "cannot write"),
    (["--out", "/sys/x.safetensors"], "cannot write"),
]


@pytest.mark.parametrize("extra, fragment", STAGE_BAD, ids=[" ".join(a) for a, _ in STAGE_BAD])
def test_train_features_refuses_before_work(extra, fragment, tiny_data, tmp_path, cli, monkeypatch):
    from isl_cli.engine import features

    monkeypatch.setattr(features, "train_features", lambda job: (_ for _ in ()).throw(AssertionError("work")))
    args = ["train-features", "--data", tiny_data, *TINY, "--epochs", "1"]
    if "--out" not in extra:
        args += ["--out", tmp_path / "f.safetensors"]
    assert_error_line(cli(*args, *extra), fragment)
    assert list(tmp_path.iterdir()) == []


def test_val_split_that_leaves_no_keys_is_refused(tiny_data, tmp_path, cli):
    line = assert_error_line(cli("train-features", "--data", tiny_data, *TINY, "--epochs", "1", "--val-split",
                                 "0.999", "--out", tmp_path / "f.safetensors"), "--val-split")
    assert "96 of the 96" in line  # tiny_data has 96 training images: none left as kNN keys
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def features_file(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("feat") / "r0-features.safetensors"
    result = run_isl("train-features", "--data", tiny_data, "--out", out, *TINY, "--epochs", "1")
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("command, extra, fragment", [
    ("train-gan", ["--lr", "nan"], "--lr"),
    ("train-gan", ["--batch-size", "0"], "--batch-size"),
    ("train-gan", ["--out", "/proc/x.safetensors"], "cannot write"),
    ("mine-neighbors", ["--per-round", "nan"], "--per-round"),
    ("mine-neighbors", ["--per-round", "inf"], "--per-round"),
    ("mine-neighbors", ["--tau", "nan"], "--tau"),
    ("mine-neighbors", ["--out", "/sys/x.safetensors"], "cannot write"),
])
def test_gan_and_mining_options(command, extra, fragment, features_file, cli):
    before = features_file.read_bytes()
    assert_error_line(cli(command, "--features", features_file, "--device", "cpu", "--quiet", *extra), fragment)
    assert features_file.read_bytes() == before


@pytest.mark.parametrize("extra, fragment", [
    (["--temperature", "nan"], "--temperature"),
    (["--temperature", "inf"], "--temperature"),
    (["--recompute", "--batch-size", "0"], "--batch-size"),
    (["--k", "0"], "--k"),
])
def test_eval_knn_options(extra, fragment, features_file, cli):
    assert_error_line(cli("eval-knn", features_file, "--device", "cpu", "--quiet", *extra), fragment)


def test_export_batch_and_unwritable_out(features_file, cli):
    assert_error_line(cli("export", features_file, "--what", "embeddings", "--batch-size", "0", "--out",
                          features_file.parent / "e.safetensors", "--device", "cpu"), "--batch-size")
    assert_error_line(cli("export", features_file, "--out", "/proc/e.safetensors", "--device", "cpu"),
                      "cannot write")


@pytest.mark.parametrize("what", ["bank.memory", "backbone.conv1.weight"])
def test_gan_refuses_features_holding_nan(what, features_file, tmp_path, cli):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from isl_cli.digest import DIGEST_KEY, tensors_digest

    with safe_open(str(features_file), "pt") as handle:
        meta = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    tensors[what] = tensors[what].clone()
    tensors[what].view(-1)[0] = float("nan")
    meta[DIGEST_KEY] = tensors_digest(tensors)  # a valid file whose values hold a NaN, not a corrupt one
    poisoned = tmp_path / "r0-features.safetensors"
    save_file(tensors, str(poisoned), metadata=meta)
    before = poisoned.read_bytes()
    line = assert_error_line(cli("train-gan", "--features", poisoned, "--device", "cpu", "--quiet"), "NaN")
    assert str(poisoned) in line
    assert poisoned.read_bytes() == before and not (tmp_path / "r0-gan.safetensors").exists()


def test_fetch_data_impossible_size_and_unwritable_root(tmp_path, cli):
    line = assert_error_line(cli("fetch-data", "shapes", "--num-train", "100000000", "--root", tmp_path), "memory")
    assert "GiB" in line
    assert_error_line(cli("fetch-data", "shapes", "--root", "/proc/isl-data"), "cannot write")
    assert list(tmp_path.iterdir()) == []


def test_fetch_imagefolder_with_symlink_loops(tmp_path, cli):
    from PIL import Image

    for split in ("train", "test"):
        folder = tmp_path / "src" / split / "a"
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    a = tmp_path / "src" / "train" / "a"
    (a / "loop1").symlink_to("loop2")
    (a / "loop2").symlink_to("loop1")
    assert_error_line(cli("fetch-data", "imagefolder", "--source", tmp_path / "src", "--root", tmp_path / "d"),
                      "loop1", "symbolic links")
    (a / "loop1").unlink()
    (a / "loop2").unlink()
    (a / "self").symlink_to(".")
    assert_error_line(cli("fetch-data", "imagefolder", "--source", tmp_path / "src", "--root", tmp_path / "d"),
                      "self", "loop")
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------ report from another folder


def test_report_from_another_folder_takes_data(tiny_data, features_file, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with safe_open(str(features_file), "pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    from isl_cli.digest import META_DIGEST_KEY, metadata_digest

    meta = json.loads(metadata["isl.meta"])
    meta["dataset"] = "data/shapes"  # recorded relative to where train-features ran
    metadata = {**metadata, "isl.meta": json.dumps(meta)}
    metadata[META_DIGEST_KEY] = metadata_digest(metadata)  # a file recorded elsewhere, not a damaged one
    save_file(tensors, str(run_dir / "r0-features.safetensors"), metadata=metadata)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_isl("report", run_dir, "--device", "cpu", cwd=elsewhere)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "pass --data DIR" in result.stderr  # an option report has
    result = run_isl("report", run_dir, "--device", "cpu", "--data", tiny_data, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (run_dir / "retrieval.png").exists()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torch_free_memory_bound_never_exceeds_the_counted_size(arch):
    from isl_cli.checks import backbone_bytes_lower_bound, backbone_training_bytes

    for width in (0.0625, 0.25, 1.0, 3.0):
        bound = backbone_bytes_lower_bound(arch, "cifar", width)
        assert 0 < bound <= backbone_training_bytes(arch, "cifar", 128, width)
    assert backbone_bytes_lower_bound(arch, "imagenet", 1.0) is None
