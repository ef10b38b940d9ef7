"""fetch-data conversions on small files in the official layouts (no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from archive_builders import (  # noqa: F401  (clean_env is an autouse fixture)
    CIFAR10_NAMES,
    cifar_binary_archive,
    cifar_python_archive,
    clean_env,
    image_tree,
    mnist_folder,
    official,
    run_isl,
    svhn_mats,
    write_image,
)

from isl_cli.artifacts import read_header
from isl_cli.data.sources import fetch as fetch_module
from isl_cli.data.sources import imagefolder
from isl_cli.data.sources.fetch import needs_network, prepare_dataset
from isl_cli.data.store import load_split


def _load(root, folder):
    return load_split(root / folder, "train"), load_split(root / folder, "test")


def _assert_matches(train, test, expected):
    assert torch.equal(train.images, torch.from_numpy(expected.train_images))
    assert torch.equal(train.labels, torch.from_numpy(expected.train_labels))
    assert torch.equal(test.images, torch.from_numpy(expected.test_images))
    assert torch.equal(test.labels, torch.from_numpy(expected.test_labels))
    assert train.classes == expected.classes == test.classes
    assert train.fingerprint == test.fingerprint != ""


# ------------------------------------------------------------------ CIFAR


@pytest.mark.parametrize("dataset,archive", [("cifar10", "cifar-10-python.tar.gz"),
                                             ("cifar100", "cifar-100-python.tar.gz")])
def test_cifar_python_archive_from_source(tmp_path, monkeypatch, dataset, archive):
    path = tmp_path / archive
    expected = cifar_python_archive(path, dataset)
    official(monkeypatch, f"{dataset}/{archive}", path)
    result = run_isl("fetch-data", dataset, "--root", tmp_path / "data", "--source", path, "-q")
    assert result.exit_code == 0, result.stderr
    train, test = _load(tmp_path / "data", dataset)
    _assert_matches(train, test, expected)
    assert len(train.classes) == (10 if dataset == "cifar10" else 100)
    config = read_header(tmp_path / "data" / dataset / "train.safetensors").config
    assert config["format"] == "cifar-python" and config["checksum"] == "verified"
    assert "5,000" not in result.stdout and f"{len(train)} / {len(test)}" in result.stdout.replace(",", "")


@pytest.mark.parametrize("dataset,archive", [("cifar10", "cifar-10-binary.tar.gz"),
                                             ("cifar100", "cifar-100-binary.tar.gz")])
def test_cifar_binary_archive_from_folder(tmp_path, monkeypatch, dataset, archive):
    folder = tmp_path / "dl"
    folder.mkdir()
    expected = cifar_binary_archive(folder / archive, dataset)
    official(monkeypatch, f"{dataset}/{archive}", folder / archive)
    prepare_dataset(dataset, tmp_path / "data", source=folder, progress=False)
    train, test = _load(tmp_path / "data", dataset)
    _assert_matches(train, test, expected)
    assert train.info["checksum"] == "verified" and train.info["format"] == "cifar-binary"


def test_cifar_binary_with_other_checksum_is_validated_and_noted(tmp_path):
    path = tmp_path / "my-cifar.tar.gz"
    expected = cifar_binary_archive(path, "cifar10")
    outcome = fetch_module.fetch_dataset("cifar10", tmp_path / "data", source=path, progress=False)
    assert any("checksum differs" in note for note in outcome.notes)
    train, test = _load(tmp_path / "data", "cifar10")
    _assert_matches(train, test, expected)
    assert train.info["checksum"] == "differs"


def test_cifar_size_option_resizes(tmp_path, monkeypatch):
    path = tmp_path / "cifar-10-python.tar.gz"
    cifar_python_archive(path, "cifar10")
    official(monkeypatch, "cifar10/cifar-10-python.tar.gz", path)
    prepare_dataset("cifar10", tmp_path / "data", source=path, size=16, progress=False)
    train, test = _load(tmp_path / "data", "cifar10")
    assert train.images.shape == (15, 3, 16, 16) and test.images.shape == (4, 3, 16, 16)


# ------------------------------------------------------------------ SVHN


def test_svhn_from_folder_maps_label_10_to_digit_0(tmp_path, monkeypatch):
    expected = svhn_mats(tmp_path / "svhn")
    official(monkeypatch, "svhn/train_32x32.mat", tmp_path / "svhn" / "train_32x32.mat")
    official(monkeypatch, "svhn/test_32x32.mat", tmp_path / "svhn" / "test_32x32.mat")
    result = run_isl("fetch-data", "svhn", "--root", tmp_path / "data", "--source", tmp_path / "svhn", "-q")
    assert result.exit_code == 0, result.stderr
    train, test = _load(tmp_path / "data", "svhn")
    _assert_matches(train, test, expected)
    assert train.labels[0] == 0 and train.info["checksum"] == "verified"


def test_svhn_from_one_file_with_the_other_beside_it(tmp_path):
    expected = svhn_mats(tmp_path / "svhn")
    outcome = fetch_module.fetch_dataset("svhn", tmp_path / "data", source=tmp_path / "svhn" / "test_32x32.mat",
                                         progress=False)
    train, test = _load(tmp_path / "data", "svhn")
    _assert_matches(train, test, expected)
    assert train.info["checksum"] == "differs" and outcome.notes


# ------------------------------------------------------------------ MNIST family


def test_mnist_grey_becomes_rgb_32(tmp_path, monkeypatch):
    arrays = mnist_folder(tmp_path / "mnist")
    for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
              "t10k-labels-idx1-ubyte.gz"):
        official(monkeypatch, f"mnist/{f}", tmp_path / "mnist" / f)
    prepare_dataset("mnist", tmp_path / "data", source=tmp_path / "mnist", progress=False)
    train, test = _load(tmp_path / "data", "mnist")
    assert train.images.shape == (6, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert torch.equal(train.images[:, 0], train.images[:, 1]) and torch.equal(train.images[:, 0], train.images[:, 2])
    grey = torch.from_numpy(arrays["train"][0]).float()[:, None]  # (N, 1, 28, 28)
    reference = F.interpolate(grey, size=(32, 32), mode="bilinear", align_corners=False).round().clamp(0, 255)
    assert torch.equal(train.images[:, :1].float(), reference)
    assert torch.equal(train.labels, torch.from_numpy(arrays["train"][1]))
    assert train.classes == [str(d) for d in range(10)] and train.info["checksum"] == "verified"


def test_fashion_mnist_keeps_exact_pixels_at_native_size(tmp_path):
    arrays = mnist_folder(tmp_path / "fm", side=28)
    prepare_dataset("fashion-mnist", tmp_path / "data", source=tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz",
                    size=28, progress=False)
    train, test = _load(tmp_path / "data", "fashion-mnist")
    assert torch.equal(train.images[:, 1], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(test.images[:, 2], torch.from_numpy(arrays["t10k"][0]))
    assert torch.equal(test.labels, torch.from_numpy(arrays["t10k"][1]))
    assert train.classes[0] == "T-shirt/top" and len(train.classes) == 10
    assert train.info["checksum"] == "differs"  # not the official .gz bytes: contents validated instead


# ------------------------------------------------------------------ image folders


def test_imagefolder_labelled_same_size_becomes_tensors(tmp_path):
    written = image_tree(tmp_path / "src", {"train": {"cat": 2, "ant": 3}, "test": {"cat": 1, "dog": 1}})
    result = run_isl("fetch-data", "imagefolder", "--root", tmp_path / "data", "--source", tmp_path / "src",
                     "--name", "pets", "-q")
    assert result.exit_code == 0, result.stderr
    train, test = _load(tmp_path / "data", "pets")
    assert train.classes == test.classes == ["ant", "cat", "dog"]  # sorted union of both splits
    assert train.labels.tolist() == [0, 0, 0, 1, 1] and test.labels.tolist() == [1, 2]
    assert torch.equal(train.images[3], torch.from_numpy(written["train/cat/000.png"]).permute(2, 0, 1))
    assert torch.equal(test.images[1], torch.from_numpy(written["test/dog/000.png"]).permute(2, 0, 1))
    assert train.image_size == 8 and "8x8 RGB" in result.stdout


def test_imagefolder_val_folder_and_size_centre_crop(tmp_path):
    tall = np.zeros((16, 8, 3), dtype=np.uint8)  # (H, W, 3): shorter side 8 already
    tall[4:12] = 200
    write_image(tmp_path / "src" / "train" / "a" / "tall.png", tall)
    image_tree(tmp_path / "src", {"val": {"a": 1, "b": 1}}, size=(12, 12))
    prepare_dataset("imagefolder", tmp_path / "data", source=tmp_path / "src", size=8, progress=False)
    train, test = _load(tmp_path / "data", "imagefolder")
    assert train.images.shape == (1, 3, 8, 8) and test.images.shape == (2, 3, 8, 8)
    assert bool((train.images == 200).all())  # exactly the centre 8 rows were kept
    assert test.labels.tolist() == [0, 1] and train.info["test_folder"] == "val"


def test_imagefolder_mixed_sizes_become_a_file_index(tmp_path):
    image_tree(tmp_path / "src", {"train": {"a": 2}, "test": {"a": 1}}, size=(8, 8))
    image_tree(tmp_path / "src", {"train": {"b": 1}}, size=(10, 6), seed=9)
    prepare_dataset("imagefolder", tmp_path / "data", source=tmp_path / "src", progress=False)
    train, test = _load(tmp_path / "data", "imagefolder")
    assert train.file_backed and test.file_backed
    assert train.paths == ["train/a/000.png", "train/a/001.png", "train/b/000.png"]
    assert train.image_root == str((tmp_path / "src").resolve()) and train.labels.tolist() == [0, 0, 1]


def test_imagefolder_over_the_tensor_limit_becomes_a_file_index(tmp_path, monkeypatch):
    image_tree(tmp_path / "src", {"train": {"a": 3}, "test": {"a": 1}})
    monkeypatch.setattr(imagefolder, "TENSOR_LIMIT_BYTES", 3 * 8 * 8 * 3)
    prepare_dataset("imagefolder", tmp_path / "data", source=tmp_path / "src", progress=False)
    assert load_split(tmp_path / "data" / "imagefolder", "train").file_backed


def test_imagefolder_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        write_image(tmp_path / "flat" / f"{i}.png", np.full((6, 6, 3), i * 50, dtype=np.uint8))
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    result = run_isl("fetch-data", "imagefolder", "--root", tmp_path / "data", "--source", tmp_path / "flat")
    assert result.exit_code == 0, result.stderr
    train, test = _load(tmp_path / "data", "imagefolder")
    assert train.labels.tolist() == [-1, -1, -1] and train.classes == [] and not train.labelled
    assert len(test) == 0 and test.images.shape == (0, 3, 6, 6)
    assert int(train.images[2, 0, 0, 0]) == 100 and "unlabelled" in result.stdout


# ------------------------------------------------------------------ ImageNet


def test_imagenet_index_without_opening_images(tmp_path):
    src = tmp_path / "ilsvrc"
    image_tree(src, {"train": {"n02": 2, "n01": 1}, "val": {"n01": 1, "n02": 1}}, size=(5, 4), suffix=".JPEG")
    (src / "train" / "n02" / "broken.JPEG").write_bytes(b"not a jpeg")  # indexed: images are not opened
    result = run_isl("fetch-data", "imagenet", "--root", tmp_path / "data", "--source", src, "-q")
    assert result.exit_code == 0, result.stderr
    train, test = _load(tmp_path / "data", "imagenet")
    assert train.classes == ["n01", "n02"] and train.file_backed
    assert train.paths == ["train/n01/000.JPEG", "train/n02/000.JPEG", "train/n02/001.JPEG", "train/n02/broken.JPEG"]
    assert train.labels.tolist() == [0, 1, 1, 1] and test.labels.tolist() == [0, 1]
    assert test.paths[0] == "val/n01/000.JPEG" and train.image_root == str(src.resolve())
    assert "file index" in result.stdout


# ------------------------------------------------------------------ existing data, options, network check


def test_existing_data_set_is_left_alone_unless_forced(tmp_path):
    root = tmp_path / "data"
    first = run_isl("fetch-data", "shapes", "--root", root, "--num-train", 20, "--num-test", 10)
    assert first.exit_code == 0 and "created" in first.stdout
    before = (root / "shapes" / "train.safetensors").stat().st_mtime_ns
    again = run_isl("fetch-data", "shapes", "--root", root, "--num-train", 20, "--num-test", 10)
    assert again.exit_code == 0 and "already prepared" in again.stdout
    assert (root / "shapes" / "train.safetensors").stat().st_mtime_ns == before
    forced = run_isl("fetch-data", "shapes", "--root", root, "--num-train", 20, "--num-test", 10, "--force")
    assert forced.exit_code == 0 and "created" in forced.stdout


def test_broken_existing_data_set_is_recreated(tmp_path):
    root = tmp_path / "data"
    prepare_dataset("shapes", root, num_train=20, num_test=10, progress=False)
    (root / "shapes" / "train.safetensors").write_bytes(b"truncated")
    outcome = fetch_module.fetch_dataset("shapes", root, num_train=20, num_test=10, progress=False)
    assert outcome.created and len(load_split(root / "shapes", "train")) == 20


def test_root_defaults_to_isl_data(tmp_path, monkeypatch):
    monkeypatch.setenv("ISL_DATA", str(tmp_path / "envroot"))
    result = run_isl("fetch-data", "shapes", "--num-train", 10, "--num-test", 10, "--name", "tiny")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "envroot" / "tiny" / "test.safetensors").is_file()


def test_needs_network(tmp_path):
    assert needs_network("cifar10")
    assert not needs_network("cifar10", source=tmp_path)
    assert not needs_network("shapes") and not needs_network("imagefolder")
    (tmp_path / "downloads" / "svhn").mkdir(parents=True)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        (tmp_path / "downloads" / "svhn" / name).write_bytes(b"x")
    assert not needs_network("svhn", root=tmp_path) and needs_network("mnist", root=tmp_path)
    prepare_dataset("shapes", tmp_path, folder_name="mnist", num_train=10, num_test=10, progress=False)
    assert not needs_network("mnist", root=tmp_path)  # a prepared folder needs nothing


def test_prepare_refuses_to_download_when_not_allowed(tmp_path):
    with pytest.raises(Exception, match="must first be downloaded from https://www.cs.toronto.edu"):
        prepare_dataset("cifar100", tmp_path, allow_download=False, progress=False)
    assert not (tmp_path / "cifar100").exists()


def test_cifar_names_come_from_the_archive(tmp_path, monkeypatch):
    path = tmp_path / "cifar-10-python.tar.gz"
    cifar_python_archive(path)
    official(monkeypatch, "cifar10/cifar-10-python.tar.gz", path)
    prepare_dataset("cifar10", tmp_path / "data", source=path, progress=False)
    assert load_split(tmp_path / "data" / "cifar10", "test").classes == CIFAR10_NAMES
