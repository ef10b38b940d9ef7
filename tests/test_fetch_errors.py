"""fetch-data bad input: each gives exit code 2, one stderr line, and nothing written."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile

import numpy as np
from archive_builders import (  # noqa: F401  (clean_env is an autouse fixture)
    assert_one_line_error,
    cifar_binary_archive,
    cifar_python_archive,
    clean_env,
    idx_bytes,
    image_tree,
    mnist_folder,
    official,
    run_isl,
    svhn_mats,
    write_image,
)

from isl_cli.data.sources.cifar import load_numpy_pickle


def fetch(tmp_path, *args):
    return run_isl("fetch-data", *args, "--root", tmp_path / "data", "-q")


def nothing_written(tmp_path) -> bool:
    data = tmp_path / "data"
    return not data.exists() or not any(p.suffix == ".safetensors" for p in data.rglob("*"))


def test_unknown_name_lists_known_names(tmp_path):
    line = assert_one_line_error(fetch(tmp_path, "cifar11"), "unknown data set 'cifar11'", "cifar10", "shapes")
    assert "imagenet" in line and nothing_written(tmp_path)


def test_imagenet_without_source_says_no_download_exists(tmp_path):
    assert_one_line_error(fetch(tmp_path, "imagenet"), "--source", "no download exists")


def test_missing_source_path(tmp_path):
    assert_one_line_error(fetch(tmp_path, "svhn", "--source", tmp_path / "nope"), "no such file or folder")


def test_shapes_only_options_are_refused_elsewhere(tmp_path):
    assert_one_line_error(fetch(tmp_path, "cifar10", "--num-train", "10"), "--num-train", "only for shapes")


def test_bad_folder_name(tmp_path):
    assert_one_line_error(fetch(tmp_path, "shapes", "--name", "downloads"), "plain folder name")


def test_existing_data_with_other_options_needs_force(tmp_path):
    assert fetch(tmp_path, "shapes", "--num-train", "10", "--num-test", "10").exit_code == 0
    assert_one_line_error(fetch(tmp_path, "shapes", "--num-train", "10", "--num-test", "10", "--seed", "1"),
                          "other options", "--force")


# ------------------------------------------------------------------ CIFAR archives


def test_corrupted_cifar_archive(tmp_path, monkeypatch):
    path = tmp_path / "cifar-10-binary.tar.gz"
    cifar_binary_archive(path)
    path.write_bytes(path.read_bytes()[:-200])  # truncated download
    assert_one_line_error(fetch(tmp_path, "cifar10", "--source", path), str(path))
    assert nothing_written(tmp_path)


def test_random_bytes_are_not_an_archive(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(os.urandom(300))
    assert_one_line_error(fetch(tmp_path, "cifar10", "--source", path), "not a readable tar.gz")


def test_python_archive_with_wrong_checksum_is_never_unpickled(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    cifar_python_archive(path)
    assert_one_line_error(fetch(tmp_path, "cifar10", "--source", path), "does not match the official", "refused")
    assert nothing_written(tmp_path)


def test_archive_of_the_other_cifar(tmp_path, monkeypatch):
    path = tmp_path / "cifar-100-python.tar.gz"
    cifar_python_archive(path, "cifar100")
    official(monkeypatch, "cifar100/cifar-100-python.tar.gz", path)
    assert_one_line_error(fetch(tmp_path, "cifar10", "--source", path), "isl fetch-data cifar100")
    unofficial = tmp_path / "other.tar.gz"
    cifar_binary_archive(unofficial, "cifar100")
    assert_one_line_error(fetch(tmp_path, "cifar10", "--source", unofficial), "holds cifar100")


def test_folder_without_a_cifar_archive(tmp_path):
    assert_one_line_error(fetch(tmp_path, "cifar100", "--source", tmp_path), "no cifar-100-python.tar.gz or")


def test_tar_without_cifar_members(tmp_path):
    path = tmp_path / "x.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("something/else")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert_one_line_error(fetch(tmp_path, "cifar10", "--source", path), "not a CIFAR archive")


def test_binary_archive_with_torn_records(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, size in [*[(f"data_batch_{i}.bin", 3073) for i in range(1, 6)], ("test_batch.bin", 3000),
                           ("batches.meta.txt", 0)]:
            data = b"\n".join([b"c"] * 10) if name.endswith(".txt") else bytes(size)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert_one_line_error(fetch(tmp_path, "cifar10", "--source", path), "whole number of 3073-byte records")


def test_a_malicious_pickle_is_refused_even_with_a_matching_checksum(tmp_path, monkeypatch):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        for name in names:
            data = pickle.dumps(Evil(), protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    official(monkeypatch, "cifar10/cifar-10-python.tar.gz", path)
    assert_one_line_error(fetch(tmp_path, "cifar10", "--source", path), "not a readable CIFAR pickle", "not allowed")
    assert not (tmp_path / "pwned").exists() and nothing_written(tmp_path)


def test_restricted_unpickler_reads_numpy_arrays_only():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    loaded = load_numpy_pickle(pickle.dumps({"a": array, "b": [1, 2]}, protocol=3))
    assert np.array_equal(loaded["a"], array) and loaded["b"] == [1, 2]


# ------------------------------------------------------------------ SVHN, IDX


def test_corrupted_svhn_mat(tmp_path):
    svhn_mats(tmp_path / "svhn")
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"MATLAB 5.0 but then nothing useful")
    assert_one_line_error(fetch(tmp_path, "svhn", "--source", tmp_path / "svhn"), "not a readable SVHN .mat")


def test_svhn_needs_both_files(tmp_path):
    svhn_mats(tmp_path / "svhn")
    (tmp_path / "svhn" / "test_32x32.mat").unlink()
    assert_one_line_error(fetch(tmp_path, "svhn", "--source", tmp_path / "svhn" / "train_32x32.mat"),
                          "no test_32x32.mat")


def test_mnist_folder_missing_files(tmp_path):
    mnist_folder(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert_one_line_error(fetch(tmp_path, "mnist", "--source", tmp_path / "m"), "missing t10k-labels-idx1-ubyte.gz")


def test_mnist_bad_magic_and_bad_gzip(tmp_path):
    mnist_folder(tmp_path / "m")
    (tmp_path / "m" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    assert_one_line_error(fetch(tmp_path, "mnist", "--source", tmp_path / "m"), "bad magic number")
    (tmp_path / "m" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + os.urandom(40))
    assert_one_line_error(fetch(tmp_path, "mnist", "--source", tmp_path / "m"), "corrupted or unreadable")


def test_mnist_truncated_idx_and_label_count(tmp_path):
    mnist_folder(tmp_path / "m")
    images = np.zeros((6, 28, 28), dtype=np.uint8)
    (tmp_path / "m" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)[:-5]))
    assert_one_line_error(fetch(tmp_path, "mnist", "--source", tmp_path / "m"), "its header [6, 28, 28]")
    (tmp_path / "m" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images[:5])))
    assert_one_line_error(fetch(tmp_path, "mnist", "--source", tmp_path / "m"), "6 labels for 5 images")


# ------------------------------------------------------------------ image folders


def test_unreadable_images_are_refused_and_listed(tmp_path):
    image_tree(tmp_path / "src", {"train": {"a": 2}, "test": {"a": 1}})
    for i in range(7):
        (tmp_path / "src" / "train" / "a" / f"bad{i}.png").write_bytes(b"not a png")
    line = assert_one_line_error(fetch(tmp_path, "imagefolder", "--source", tmp_path / "src"),
                                 "7 unreadable image(s), refused", "train/a/bad0.png", "train/a/bad4.png", "...")
    assert "bad5" not in line and nothing_written(tmp_path)
    line = assert_one_line_error(fetch(tmp_path, "imagefolder", "--source", tmp_path / "src", "--size", "8"),
                                 "refused", "train/a/bad0.png")


def test_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(fetch(tmp_path, "imagefolder", "--source", tmp_path / "empty"), "empty folder")
    (tmp_path / "labelled" / "train" / "a").mkdir(parents=True)
    (tmp_path / "labelled" / "test").mkdir()
    assert_one_line_error(fetch(tmp_path, "imagefolder", "--source", tmp_path / "labelled"), "train: no images")
    (tmp_path / "ilsvrc" / "train" / "n01").mkdir(parents=True)
    (tmp_path / "ilsvrc" / "val" / "n01").mkdir(parents=True)
    assert_one_line_error(fetch(tmp_path, "imagenet", "--source", tmp_path / "ilsvrc"), "train: no images")


def test_image_folder_layout_errors(tmp_path):
    (tmp_path / "x" / "train" / "a").mkdir(parents=True)
    assert_one_line_error(fetch(tmp_path, "imagefolder", "--source", tmp_path / "x"), "no test/ or val/")
    (tmp_path / "y" / "cats").mkdir(parents=True)
    assert_one_line_error(fetch(tmp_path, "imagefolder", "--source", tmp_path / "y"), "expected train/<class>/")
    write_image(tmp_path / "z" / "train" / "loose.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "z" / "test").mkdir()
    assert_one_line_error(fetch(tmp_path, "imagefolder", "--source", tmp_path / "z"), "outside class folders")


def test_imagenet_flat_val_and_size(tmp_path):
    (tmp_path / "i" / "train" / "n01").mkdir(parents=True)
    write_image(tmp_path / "i" / "val" / "ILSVRC2012_val_00000001.JPEG", np.zeros((4, 4, 3), np.uint8))
    assert_one_line_error(fetch(tmp_path, "imagenet", "--source", tmp_path / "i"), "sort them into val/<wnid>/")
    assert_one_line_error(fetch(tmp_path, "imagenet", "--source", tmp_path / "i", "--size", "32"),
                          "--size does not apply")


def test_size_too_large_for_tensors(tmp_path, monkeypatch):
    from isl_cli.data.sources import imagefolder

    image_tree(tmp_path / "src", {"train": {"a": 2}, "test": {"a": 1}})
    monkeypatch.setattr(imagefolder, "TENSOR_LIMIT_BYTES", 100)
    assert_one_line_error(fetch(tmp_path, "imagefolder", "--source", tmp_path / "src", "--size", "16"),
                          "over the", "smaller --size")
