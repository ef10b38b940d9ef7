"""--amp and --channels-last on the CPU in every stage; `auto`; --threads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, TINY_GAN, assert_error_line
from isl_cli import precision as precision_module
from isl_cli.config import preset_configs
from isl_cli.errors import IslError
from isl_cli.models.registry import build_backbone
from isl_cli.precision import FP32, resolve

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
FEATURES = ["--epochs", "1", "--eval-k", "20"]
FAST = ["--amp", "bf16", "--channels-last"]


class ConvProbe:
    """Records, for every Conv2d forward anywhere (only the backbone has convolutions), the output dtype and
    whether the input was channels-last."""

    def __init__(self):
        self.dtypes: set[torch.dtype] = set()
        self.channels_last: set[bool] = set()

    def clear(self) -> None:
        self.dtypes.clear()
        self.channels_last.clear()

    def __call__(self, module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            self.dtypes.add(output.dtype)
            self.channels_last.add(inputs[0].is_contiguous(memory_format=torch.channels_last)
                                   and not inputs[0].is_contiguous())


@pytest.fixture()
def probe():
    recorder = ConvProbe()
    handle = torch.nn.modules.module.register_module_forward_hook(recorder)
    yield recorder
    handle.remove()


@pytest.fixture()
def native(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16, whatever this machine has."""
    def set_native(flag: bool) -> None:
        monkeypatch.setattr(precision_module, "cpu_bf16_feature", lambda: "avx512_bf16" if flag else None)
    return set_native


@pytest.fixture(scope="module")
def features(tiny_data, tmp_path_factory) -> Path:
    """A tiny fp32 round-0 features file (made in-process)."""
    from typer.testing import CliRunner

    from isl_cli.cli.app import app

    out = tmp_path_factory.mktemp("prec") / "r0-features.safetensors"
    result = CliRunner().invoke(app, ["train-features", "--data", str(tiny_data), "--out", str(out), *TINY, *FEATURES])
    assert result.exit_code == 0, result.output
    return out


def _first_log_line(result) -> str:
    return next(line for line in result.output.splitlines() if line.strip())


# --------------------------------------------------------------------------- the module


def test_auto_picks_bf16_only_with_native_bf16(native):
    native(False)
    fallback = resolve("auto", False, CPU)
    assert fallback.amp == "none" and fallback.dtype is None
    assert fallback.describe() == "precision: fp32 (auto: this CPU has no native bf16)"
    native(True)
    fast = resolve("auto", True, CPU)
    assert fast.amp == "bf16" and fast.dtype == torch.bfloat16 and fast.channels_last
    assert fast.describe() == "precision: bf16 autocast, channels-last (auto: this CPU has native bf16 (avx512_bf16))"


def test_bf16_without_native_support_is_applied_with_a_warning(native):
    native(False)
    chosen = resolve("bf16", False, CPU)
    assert chosen.amp == "bf16" and "slower than fp32" in chosen.describe()


def test_fp16_on_cpu_and_unknown_choices_are_refused():
    with pytest.raises(IslError, match="fp16 needs a CUDA device"):
        resolve("fp16", False, CPU)
    with pytest.raises(IslError, match="--amp must be one of"):
        resolve("fp8", False, CPU)


def test_cpu_feature_detection_reads_cpuinfo_flags(monkeypatch):
    for probe_name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe_name, lambda: False, raising=False)
    monkeypatch.setattr(precision_module, "_cpuinfo_flags", lambda: {"sse2", "avx512f", "avx512_bf16"})
    assert precision_module.cpu_bf16_feature() == "avx512_bf16"
    monkeypatch.setattr(precision_module, "_cpuinfo_flags", lambda: {"sse2", "avx2"})
    assert precision_module.cpu_bf16_feature() is None


def test_forward_activations_are_bf16_inside_autocast_and_output_fp32(probe):
    torch.manual_seed(0)
    model = build_backbone("resnet18", variant="cifar", low_dim=16, width=0.0625).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain = model(images)  # (4, 16)
        assert probe.dtypes == {torch.float32}
        assert torch.equal(FP32.forward(model, images), plain)  # fp32: the plain forward, bit for bit
        probe.clear()
        fast = resolve("bf16", True, CPU)
        out = fast.forward(fast.prepare(model), images)  # (4, 16)
    assert probe.dtypes == {torch.bfloat16} and probe.channels_last == {True}
    assert out.dtype == torch.float32 and out.shape == (4, 16)
    assert torch.allclose(out, plain, atol=0.05)  # unit rows: bf16 keeps ~2-3 digits


def test_presets_quick_fast_paper_fp32():
    paper, _, _ = preset_configs("paper", imagenet=False)
    quick, _, _ = preset_configs("quick", imagenet=False)
    assert (paper.amp, paper.channels_last) == ("none", False)
    assert (quick.amp, quick.channels_last) == ("auto", True)


# --------------------------------------------------------------------------- every stage


def test_train_features_bf16_channels_last(tiny_data, tmp_path, cli, probe):
    out = tmp_path / "r0-features.safetensors"
    result = cli("train-features", "--data", tiny_data, "--out", out, *TINY, *FEATURES, *FAST)
    assert result.exit_code == 0, result.output
    assert _first_log_line(result) == "precision: bf16 autocast, channels-last (--amp bf16)"
    assert probe.dtypes == {torch.bfloat16} and probe.channels_last == {True}  # the step and the kNN evaluation
    tensors = load_file(str(out))
    assert tensors["bank.memory"].dtype == torch.float32 and tensors["backbone.conv1.weight"].dtype == torch.float32
    record = json.loads((tmp_path / "r0-features.metrics.jsonl").read_text().splitlines()[0])
    assert record["loss"] == record["loss"] and "knn_top1" in record  # finite loss, evaluated


def test_train_features_auto_without_native_bf16_falls_back_to_fp32(tiny_data, tmp_path, cli, probe, native):
    native(False)
    result = cli("train-features", "--data", tiny_data, "--out", tmp_path / "f.safetensors", *TINY, *FEATURES,
                 "--amp", "auto")
    assert result.exit_code == 0, result.output
    assert _first_log_line(result) == "precision: fp32 (auto: this CPU has no native bf16)"
    assert probe.dtypes == {torch.float32} and probe.channels_last == {False}


def test_train_gan_and_mine_bf16(features, tmp_path, cli, probe):
    gan = tmp_path / "r0-gan.safetensors"
    result = cli("train-gan", "--features", features, "--out", gan, *TINY_GAN, "--epochs", "1", *FAST)
    assert result.exit_code == 0, result.output
    assert _first_log_line(result) == "precision: bf16 autocast, channels-last (--amp bf16)"
    assert probe.dtypes == {torch.bfloat16} and probe.channels_last == {True}
    assert load_file(str(gan))["g_losses"].isfinite().all()
    probe.clear()
    result = cli("mine-neighbors", "--features", features, "--gan", gan, "--out", tmp_path / "n.safetensors",
                 *TINY_GAN, "--max-passes", "1", *FAST)
    assert result.exit_code == 0, result.output
    assert _first_log_line(result) == "precision: bf16 autocast, channels-last (--amp bf16)"
    assert probe.dtypes == {torch.bfloat16}


def test_train_gan_quick_preset_takes_the_fast_path(features, tmp_path, cli, probe, native):
    native(True)
    result = cli("train-gan", "--features", features, "--out", tmp_path / "g.safetensors", *TINY_GAN,
                 "--epochs", "1", "--preset", "quick")
    assert result.exit_code == 0, result.output
    assert _first_log_line(result).startswith("precision: bf16 autocast, channels-last (auto: this CPU has native")
    assert probe.dtypes == {torch.bfloat16}


def test_eval_knn_recompute_and_export_bf16(features, tmp_path, cli, probe):
    fp32 = cli("eval-knn", features, "--recompute", "--k", "20", "--json", "--device", "cpu")
    fast = cli("eval-knn", features, "--recompute", "--k", "20", "--json", "--device", "cpu", *FAST)
    assert fp32.exit_code == 0 and fast.exit_code == 0, fast.output
    assert probe.dtypes == {torch.float32, torch.bfloat16}
    assert "precision: bf16 autocast, channels-last (--amp bf16)" in fast.stderr
    assert json.loads(fast.stdout)["results"][0]["k"] == 20
    probe.clear()
    emb = tmp_path / "emb.safetensors"
    result = cli("export", features, "--what", "embeddings", "--out", emb, "--device", "cpu", *FAST)
    assert result.exit_code == 0, result.output
    assert probe.dtypes == {torch.bfloat16}
    assert load_file(str(emb))["features"].dtype == torch.float32


def test_run_quick_preset_first_log_line_and_every_stage_in_bf16(tiny_data, tmp_path, cli, probe, native):
    native(True)
    result = cli("run", "--data", tiny_data, "--run-dir", tmp_path / "run", "--preset", "quick", "--rounds", "2",
                 "--epochs", "1", "--gan-epochs", "1", "--max-passes", "1", "--width", "0.0625", "--low-dim", "16",
                 "--batch-size", "16", "--num-draws", "64", "--k", "20", "--no-report", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert _first_log_line(result) == "precision: bf16 autocast, channels-last (auto: this CPU has native bf16 (avx512_bf16))"
    # the run's first line, then train-features x2, train-gan, mine-neighbors, the final recompute, the linear probe
    assert result.output.count("precision: bf16 autocast, channels-last") == 7
    assert probe.dtypes == {torch.bfloat16}


def test_fp16_on_cpu_is_one_error_line(features, tiny_data, tmp_path, cli):
    result = cli("train-gan", "--features", features, "--out", tmp_path / "g.safetensors", *TINY_GAN, "--amp", "fp16")
    assert_error_line(result, "--amp fp16 needs a CUDA device")
    result = cli("train-features", "--data", tiny_data, "--out", tmp_path / "f.safetensors", *TINY, "--amp", "fp16")
    assert_error_line(result, "--amp fp16 needs a CUDA device")
    assert not (tmp_path / "f.safetensors").exists() and not (tmp_path / "g.safetensors").exists()


def test_threads_option_sets_torch_threads_and_refuses_zero(features, cli):
    result = cli("eval-knn", features, "--k", "20", "--device", "cpu", "--threads", "0")
    assert_error_line(result, "--threads must be positive")
    torch.set_num_threads(2)
    result = cli("eval-knn", features, "--k", "20", "--device", "cpu", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 1
