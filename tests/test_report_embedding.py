"""`isl report` draws embedding.png: a t-SNE map of the final round's test embeddings, coloured by class."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import TINY


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory):
    """A run folder holding one tiny round-0 features file."""
    from typer.testing import CliRunner

    from isl_cli.cli.app import app

    folder = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(app, ["train-features", "--data", str(tiny_data), "--out",
                                      str(folder / "r0-features.safetensors"), *TINY, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    return folder


def test_report_writes_a_png_map_of_the_test_embeddings(run_dir, cli):
    from PIL import Image

    result = cli("report", run_dir, "--device", "cpu", "--map-points", "30")
    assert result.exit_code == 0, result.output
    path = run_dir / "embedding.png"
    assert f"wrote {path}" in result.stdout.replace("\n", "")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < path.stat().st_size < 2_000_000
    with Image.open(path) as image:
        width, height = image.size
    assert 500 < width < 2000 and 400 < height < 2000
    assert "embedding map: 30 test images embedded" in result.stderr  # the cap, and the cost line


def test_the_map_needs_scikit_learn_and_says_so_in_one_line(run_dir, cli, monkeypatch):
    (run_dir / "embedding.png").unlink(missing_ok=True)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    result = cli("report", run_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "scikit-learn" in line]
    assert lines == ["embedding.png skipped: scikit-learn is not installed (pip install scikit-learn)"], result.stderr
    assert not (run_dir / "embedding.png").exists()
    assert (run_dir / "retrieval.png").exists()  # the other figures are still drawn


def test_map_points_zero_draws_no_map_and_negative_is_refused(run_dir, cli):
    from conftest import assert_error_line

    (run_dir / "embedding.png").unlink(missing_ok=True)
    result = cli("report", run_dir, "--device", "cpu", "--map-points", "0")
    assert result.exit_code == 0, result.output
    assert not (run_dir / "embedding.png").exists()
    assert_error_line(cli("report", run_dir, "--map-points", "-1"), "--map-points")


def test_points_are_a_fixed_random_subset_and_tsne_is_deterministic():
    from isl_cli.engine.embedding_map import choose_points, tsne_2d

    assert choose_points(10, 2000, 0).tolist() == list(range(10))
    chosen = choose_points(5000, 2000, 3)
    assert len(chosen) == 2000 and len(set(chosen.tolist())) == 2000 and torch.equal(chosen, chosen.sort().values)
    assert torch.equal(chosen, choose_points(5000, 2000, 3)) and not torch.equal(chosen, choose_points(5000, 2000, 4))
    features = torch.nn.functional.normalize(torch.randn(40, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    first, second = tsne_2d(features.numpy(), seed=0), tsne_2d(features.numpy(), seed=0)
    assert first.shape == (40, 2) and (first == second).all()
