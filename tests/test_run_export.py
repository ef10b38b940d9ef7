"""`isl run` (kill and rerun, config refusal, summary, report) and `isl export` round trips."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_error_line, run_isl, spawn_isl
from isl_cli.artifacts import read_header

RUN = ["run", "--dataset", "shapes", "--rounds", "2", "--epochs", "2", "--eval-every", "1", "--eval-k", "20",
       "--width", "0.0625", "--low-dim", "16", "--batch-size", "16", "--gan-epochs", "2", "--gan-lr", "0.01",
       "--num-draws", "64", "--max-passes", "2", "--tau", "0.3", "--base-radius", "0.3", "--k", "20", "--k", "5",
       "--device", "cpu", "--quiet"]


def _run_args(data: Path, run_dir: Path, *extra: str) -> list:
    return [*RUN, "--data", data, "--run-dir", run_dir, *extra]


@pytest.fixture(scope="module")
def reference_run(tiny_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "ref"
    result = run_isl(*_run_args(tiny_data, run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


def test_run_writes_every_stage_summary_and_figures(reference_run):
    names = {p.name for p in reference_run.iterdir()}
    for stage in ("r0-features", "r0-gan", "r0-neighbors", "r1-features"):
        assert f"{stage}.safetensors" in names
    assert "r1-gan.safetensors" not in names and "r1-neighbors.safetensors" not in names  # last round: no mining
    assert not any(".partial." in n for n in names)
    summary = json.loads((reference_run / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert summary["final"]["source"] == "recomputed" and [r["k"] for r in summary["final"]["results"]] == [5, 20]
    r0 = summary["rounds"][0]
    assert "knn_top1" in r0 and r0["mined_entries"] > 0 and r0["mined_precision"] is not None
    assert r0["mined_similarity_pairs"] == r0["mined_new_pairs"] and r0["mined_similarity_precision"] is not None
    baselines = summary["baselines"]
    assert baselines == json.loads((reference_run / "baselines.json").read_text())
    assert [r["k"] for r in baselines["pixels"]["results"]] == [5, 20] and baselines["pixels"]["scored"]
    assert baselines["random"]["details"]["width"] == 0.0625 and baselines["random"]["details"]["low_dim"] == 16
    assert read_header(reference_run / "r1-features.safetensors").meta["round"] == 1
    config = json.loads((reference_run / "config.json").read_text())
    assert config["config"]["rounds"] == 2 and config["config"]["features"]["epochs"] == 2
    for png in ("knn.png", "losses.png", "neighbors.png", "gan.png", "retrieval.png"):
        data = (reference_run / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png


def _kill_when(proc, path: Path, timeout: float = 240) -> None:
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - start < timeout
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_twice_in_different_stages_then_rerun_equals_uninterrupted(reference_run, tiny_data, tmp_path):
    run_dir = tmp_path / "killed"
    args = _run_args(tiny_data, run_dir, "--no-report")
    # 1st kill: in round 0's GAN stage (its first epoch checkpoint just appeared)
    _kill_when(spawn_isl(*args), run_dir / "r0-gan.partial.safetensors")
    assert not (run_dir / "r0-gan.safetensors").exists()
    # 2nd kill: in round 1's feature stage
    _kill_when(spawn_isl(*args), run_dir / "r1-features.partial.safetensors")
    assert not (run_dir / "summary.json").exists()
    result = run_isl(*args)
    assert result.returncode == 0, result.stderr
    assert "skipping" in result.stderr and "resuming" in result.stderr
    for name in ("r0-features", "r0-gan", "r1-features"):
        a, b = load_file(str(run_dir / f"{name}.safetensors")), load_file(str(reference_run / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert torch.equal(load_file(str(run_dir / "r0-neighbors.safetensors"))["pairs"],
                       load_file(str(reference_run / "r0-neighbors.safetensors"))["pairs"])
    final = json.loads((run_dir / "final-knn.json").read_text())
    expected = json.loads((reference_run / "final-knn.json").read_text())
    assert final["results"] == expected["results"]


def test_run_folder_with_another_config_is_refused(reference_run, tiny_data, tmp_path, cli):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference_run, copy)
    args = _run_args(tiny_data, copy)
    args[args.index("--epochs") + 1] = "3"
    line = assert_error_line(cli(*args), "different config")
    assert "features.epochs: 2 -> 3" in line and "--overwrite" in line
    assert (copy / "r1-features.safetensors").exists()  # nothing was touched


def test_rerun_of_a_finished_run_only_prints(reference_run, tiny_data, cli):
    before = (reference_run / "r1-features.safetensors").stat().st_mtime_ns
    baselines_before = (reference_run / "baselines.json").stat().st_mtime_ns
    result = cli(*_run_args(tiny_data, reference_run, "--no-report"))
    assert result.exit_code == 0, result.output
    assert "ISL run" in result.output and "final" in result.output
    assert "pixels k20" in result.output and "random k20" in result.output
    assert (reference_run / "r1-features.safetensors").stat().st_mtime_ns == before
    assert (reference_run / "baselines.json").stat().st_mtime_ns == baselines_before  # computed once per run


# --------------------------------------------------------------------------- export


def test_export_backbone_loads_with_one_call(reference_run, tmp_path, cli):
    from isl_cli.engine.features_file import open_features
    from isl_cli.backbone_file import load_backbone

    checkpoint = reference_run / "r1-features.safetensors"
    out = tmp_path / "backbone.safetensors"
    result = cli("export", checkpoint, "--what", "backbone", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    model, info = load_backbone(out)
    assert info["arch"] == "resnet18" and info["image_size"] == 32 and len(info["mean"]) == 3
    original = open_features(checkpoint, torch.device("cpu")).model
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model(x), original(x))


def test_imagenet_resnet_keys_load_into_torchvision(tmp_path, tiny_data):
    import torchvision

    from isl_cli.checkpoints import save_features
    from isl_cli.models.spec import BackboneSpec
    from isl_cli.engine.export import export_backbone
    from isl_cli.engine.state import module_tensors

    spec = BackboneSpec("resnet18", "imagenet", 1.0, 16, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    model = spec.build(torch.device("cpu")).eval()
    fingerprint = read_header(tiny_data / "train.safetensors").fingerprint
    checkpoint = tmp_path / "in-features.safetensors"
    tensors = module_tensors("backbone", model)
    tensors["bank.memory"] = torch.nn.functional.normalize(torch.randn(96, 16), dim=1)
    save_features(checkpoint, tensors, fingerprint=fingerprint, config={},
                  meta={"backbone": spec.to_meta(), "dataset": str(tiny_data), "complete": True})
    out = tmp_path / "in-backbone.safetensors"
    export_backbone(checkpoint, out, "safetensors", torch.device("cpu"))
    weights = load_file(str(out))
    reference = torchvision.models.resnet18(weights=None)
    missing, unexpected = reference.load_state_dict({k: v for k, v in weights.items() if not k.startswith("fc.")},
                                                    strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    assert torch.equal(reference.conv1.weight, model.conv1.weight)
    assert "torchvision" in read_header(out).meta


def test_export_onnx_matches_pytorch(reference_run, tmp_path, cli):
    onnxruntime = pytest.importorskip("onnxruntime")  # skipped only without the onnx extra
    pytest.importorskip("onnx")
    from isl_cli.engine.features_file import open_features

    checkpoint = reference_run / "r1-features.safetensors"
    out = tmp_path / "backbone.onnx"
    result = cli("export", checkpoint, "--what", "backbone", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    model = open_features(checkpoint, torch.device("cpu")).model
    x = torch.randn(5, 3, 32, 32)
    session = onnxruntime.InferenceSession(str(out))
    got = session.run(None, {"images": x.numpy()})[0]
    assert np.abs(got - model(x).detach().numpy()).max() < 1e-4


def test_export_embeddings_safetensors_and_npy(reference_run, tiny_data, tmp_path, cli):
    from isl_cli.data.store import load_split

    checkpoint = reference_run / "r1-features.safetensors"
    out = tmp_path / "test-emb.safetensors"
    result = cli("export", checkpoint, "--what", "embeddings", "--split", "test", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    emb = load_file(str(out))
    test = load_split(tiny_data, "test")
    assert emb["features"].shape == (48, 16) and torch.equal(emb["labels"], test.labels)
    assert torch.equal(emb["indices"], torch.arange(48))
    assert torch.allclose(emb["features"].norm(dim=1), torch.ones(48), atol=1e-5)
    assert read_header(out).kind == "embeddings"

    npy = tmp_path / "train-emb.npy"
    result = cli("export", checkpoint, "--what", "embeddings", "--split", "train", "--out", npy, "--device", "cpu")
    assert result.exit_code == 0, result.output
    features = np.load(npy, allow_pickle=False)
    labels = np.load(tmp_path / "train-emb.labels.npy", allow_pickle=False)
    assert features.shape == (96, 16) and labels.shape == (96,) and features.dtype == np.float32
    assert np.array_equal(np.load(tmp_path / "train-emb.indices.npy"), np.arange(96))


def test_export_bad_input(reference_run, tmp_path, cli):
    checkpoint = reference_run / "r1-features.safetensors"
    assert_error_line(cli("export", checkpoint, "--what", "weights", "--out", tmp_path / "x"), "--what")
    assert_error_line(cli("export", checkpoint, "--what", "embeddings", "--format", "onnx", "--out",
                          tmp_path / "x.onnx"), "not available for embeddings")
    assert_error_line(cli("export", reference_run / "r0-gan.safetensors", "--out", tmp_path / "y.safetensors"),
                      "expected features")
