"""Issue #21: what a hostile user still found. Each bad case exits 2 with one line, before any work, and leaves
every file as it was."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import TINY, TINY_GAN, assert_error_line, invoke_ok
from isl_cli.artifacts import read_header

pytestmark = pytest.mark.usefixtures("one_thread")


META_DIGEST_KEY = "isl.meta_digest"


@pytest.fixture(scope="module")
def made(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """A features file and a GAN trained on it (tiny, in-process)."""
    cli = invoke_ok
    folder = tmp_path_factory.mktemp("hostile")
    paths = {"features": folder / "r0-features.safetensors", "gan": folder / "r0-gan.safetensors"}
    cli("train-features", "--data", tiny_data, "--out", paths["features"], *TINY, "--epochs", "1", "--eval-k", "5")
    cli("train-gan", "--features", paths["features"], "--out", paths["gan"], *TINY_GAN, "--epochs", "1")
    return paths


def _snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under `folder`: file bytes, or what a non-file is (a device, a link)."""
    seen: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            seen[key] = f"link -> {os.readlink(path)}"
        elif path.is_file():
            seen[key] = path.read_bytes()
        else:
            seen[key] = f"mode {stat.S_IFMT(path.lstat().st_mode):o}"
    return seen


def _no_work(monkeypatch) -> None:
    """Training or fetching anything means a refusal came too late."""
    from isl_cli.data.sources import fetch
    from isl_cli.engine import schedule

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(fetch, "prepare_dataset", no_work)
    monkeypatch.setattr(schedule, "run_schedule", no_work)


# --------------------------------------------------------------------------- 1. run --data X, X not a data set


def _not_a_data_set(tmp_path: Path, what: str) -> Path:
    if what == "file":
        path = tmp_path / "afile"
        path.write_bytes(b"not a data set")
    elif what == "empty folder":
        path = tmp_path / "empty"
        path.mkdir()
    elif what == "/dev/null":
        path = Path("/dev/null")
    elif what == "symlink loop":
        path = tmp_path / "loop1"
        path.symlink_to(tmp_path / "loop2")
        (tmp_path / "loop2").symlink_to(path)
    else:  # a dangling link
        path = tmp_path / "dangling"
        path.symlink_to(tmp_path / "nowhere")
    return path


@pytest.mark.parametrize("what", ["file", "empty folder", "/dev/null", "symlink loop", "dangling link"])
def test_run_refuses_data_that_is_not_a_data_set(what, tmp_path, cli, monkeypatch):
    _no_work(monkeypatch)
    monkeypatch.chdir(tmp_path)
    data = _not_a_data_set(tmp_path, what)
    before = _snapshot(tmp_path)
    result = cli("run", "--data", data, "--run-dir", tmp_path / "runs" / "x", "--device", "cpu", "--quiet",
                 "--no-report", "--rounds", "1", "--epochs", "1", "--width", "0.0625")
    assert_error_line(result, "--data", str(data))
    assert _snapshot(tmp_path) == before  # no data/<basename>, no run folder


# --------------------------------------------------------------------------- 2. outputs that are not regular files


def _special_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"out-{kind}"
    if kind == "chardev":
        if os.geteuid() != 0:
            pytest.skip("making a character device needs root")
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        import socket

        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    return path


@pytest.mark.parametrize("kind", ["chardev", "fifo", "socket"])
@pytest.mark.parametrize("command", ["train-features", "train-gan", "mine-neighbors", "export"])
def test_an_output_that_is_not_a_regular_file_is_never_replaced(command, kind, made, tiny_data, tmp_path, cli):
    out = _special_file(tmp_path, kind)
    mode = out.lstat().st_mode
    args = {
        "train-features": ["train-features", "--data", tiny_data, *TINY, "--epochs", "1", "--eval-k", "5"],
        "train-gan": ["train-gan", "--features", made["features"], *TINY_GAN, "--epochs", "1"],
        "mine-neighbors": ["mine-neighbors", "--features", made["features"], "--gan", made["gan"], *TINY_GAN,
                           "--max-passes", "1"],
        "export": ["export", made["features"], "--format", "safetensors", "--device", "cpu"],
    }[command]
    line = assert_error_line(cli(*args, "--out", out, "--overwrite"), str(out), "not a regular file")
    assert "--overwrite" in line
    assert out.lstat().st_mode == mode  # still the device, pipe or socket
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


# --------------------------------------------------------------------------- 3. extreme numbers

TWO_64 = str(2**64)
THREADS = "2147483648"


def _train(data, made, tmp):
    return ["train-features", "--data", data, *TINY, "--epochs", "1", "--out", tmp / "f.safetensors"]


def _train_gan(data, made, tmp):
    return ["train-gan", "--features", made["features"], *TINY_GAN, "--epochs", "1", "--out", tmp / "g.safetensors"]


def _mine(data, made, tmp):
    return ["mine-neighbors", "--features", made["features"], "--gan", made["gan"], *TINY_GAN, "--out",
            tmp / "n.safetensors"]


# (case, command line from (data, made, tmp), the option the line must name): the table, then --threads in
# all 8 commands that take it, then the other integers a command takes by hand
EXTREME = [
    ("train-features --round -1", lambda d, m, t: [*_train(d, m, t), "--round", "-1"], "--round"),
    ("train-gan --round -1", lambda d, m, t: [*_train_gan(d, m, t), "--round", "-1"], "--round"),
    ("mine-neighbors --round -1", lambda d, m, t: [*_mine(d, m, t), "--round", "-1"], "--round"),
    ("train-features --round 2^64", lambda d, m, t: [*_train(d, m, t), "--round", TWO_64], "--round"),
    ("train-features --width 1e30", lambda d, m, t: [*_train(d, m, t), "--width", "1e30"], "--width"),
    ("train-features --low-dim 2^64", lambda d, m, t: [*_train(d, m, t), "--low-dim", TWO_64], "--low-dim"),
    ("train-features --momentum 1e30", lambda d, m, t: [*_train(d, m, t), "--momentum", "1e30"], "--momentum"),
    ("train-gan --num-draws 10^12", lambda d, m, t: [*_train_gan(d, m, t), "--num-draws", str(10**12)], "--num-draws"),
    ("train-gan --num-draws 2^64", lambda d, m, t: [*_train_gan(d, m, t), "--num-draws", TWO_64], "--num-draws"),
    ("train-gan --lr 1e30", lambda d, m, t: [*_train_gan(d, m, t), "--lr", "1e30"], "--lr"),
    ("report --seed 2^64", lambda d, m, t: ["report", m["features"].parent, "--seed", TWO_64], "--seed"),
    ("train-features --threads", lambda d, m, t: [*_train(d, m, t), "--threads", THREADS], "--threads"),
    ("train-gan --threads", lambda d, m, t: [*_train_gan(d, m, t), "--threads", THREADS], "--threads"),
    ("mine-neighbors --threads", lambda d, m, t: [*_mine(d, m, t), "--threads", THREADS], "--threads"),
    ("fetch-data --threads", lambda d, m, t: ["fetch-data", "shapes", "--root", t / "data", "--threads", THREADS],
     "--threads"),
    ("eval-knn --threads", lambda d, m, t: ["eval-knn", m["features"], "--device", "cpu", "--threads", THREADS],
     "--threads"),
    ("eval-linear --threads", lambda d, m, t: ["eval-linear", m["features"], "--device", "cpu", "--threads", THREADS],
     "--threads"),
    ("export --threads", lambda d, m, t: ["export", m["features"], "--out", t / "b.safetensors", "--threads", THREADS],
     "--threads"),
    ("run --threads", lambda d, m, t: ["run", "--data", d, "--run-dir", t / "run", "--device", "cpu", "--threads",
                                       THREADS], "--threads"),
    ("eval-knn --k 2^64", lambda d, m, t: ["eval-knn", m["features"], "--k", TWO_64, "--device", "cpu"], "--k"),
    ("eval-linear --seed 2^64", lambda d, m, t: ["eval-linear", m["features"], "--seed", TWO_64, "--device", "cpu"],
     "--seed"),
    ("fetch-data --seed 2^64", lambda d, m, t: ["fetch-data", "shapes", "--root", t / "data", "--seed", TWO_64],
     "--seed"),
    ("fetch-data --size 2^64", lambda d, m, t: ["fetch-data", "shapes", "--root", t / "data", "--size", TWO_64],
     "--size"),
    ("fetch-data --num-train 2^64", lambda d, m, t: ["fetch-data", "shapes", "--root", t / "data", "--num-train",
                                                     TWO_64], "--num-train"),
    ("fetch-data --num-test 0", lambda d, m, t: ["fetch-data", "shapes", "--root", t / "data", "--num-test", "0"],
     "--num-test"),
    ("run --rounds 2^64", lambda d, m, t: ["run", "--data", d, "--run-dir", t / "run", "--rounds", TWO_64, "--device",
                                           "cpu"], "--rounds"),
]


@pytest.mark.parametrize("case, args, option", EXTREME, ids=[case for case, _, _ in EXTREME])
def test_extreme_numbers_are_refused_with_their_range(case, args, option, tiny_data, made, tmp_path, cli,
                                                      monkeypatch):
    _no_work(monkeypatch)
    before = {path: path.read_bytes() for path in made.values()}
    line = assert_error_line(cli(*args(tiny_data, made, tmp_path)), option)
    assert "must be" in line and "got" in line, line
    assert list(tmp_path.iterdir()) == []  # nothing written, no folder made
    assert {path: path.read_bytes() for path in made.values()} == before


def test_sizes_within_range_still_meet_the_memory_check(made, tiny_data, tmp_path, cli, monkeypatch):
    from isl_cli import checks

    # a 40 MiB machine: a tiny backbone with D = 65536 needs 25 MB for its weights, gradients and momentum, and its
    # bank of 96 x 65536 floats 25 MB more; 2^24 negative candidates for a batch of 16 need 8 GiB
    monkeypatch.setattr(checks, "available_memory", lambda device=None: 40 * 2**20)
    line = assert_error_line(cli("train-gan", "--features", made["features"], *TINY_GAN, "--num-draws", str(2**24),
                                 "--out", tmp_path / "g.safetensors"), "--num-draws", "memory")
    assert "MiB free" in line
    assert_error_line(cli("train-features", "--data", tiny_data, *TINY, "--low-dim", "65536", "--epochs", "1",
                          "--out", tmp_path / "f.safetensors"), "96 x 65536 memory bank", "MiB free")
    assert list(tmp_path.iterdir()) == []


def test_non_numeric_values_are_one_line(made, cli):
    assert_error_line(cli("train-gan", "--features", made["features"], "--lr", "abc"), "--lr", "isl train-gan --help")
    assert_error_line(cli("eval-knn", made["features"], "--k", "ten"), "--k")
    assert_error_line(cli("train-features", "--no-such-option"), "--no-such-option")


# --------------------------------------------------------------------------- 4. degenerate data sets


def _tiny_split_data(folder: Path, num_train: int) -> Path:
    from isl_cli.data.sources.shapes import read_shapes
    from isl_cli.data.store import Split, save_dataset

    train, test = read_shapes(num_train=max(num_train, 1), num_test=8, seed=1)
    train = Split(labels=train.labels[:num_train], classes=train.classes, images=train.images[:num_train],
                  name="shapes", split="train")
    save_dataset(folder, train, test, {"name": "shapes"})
    return folder


@pytest.mark.parametrize("num_train", [0, 1])
def test_data_sets_with_zero_or_one_training_image(num_train, tmp_path, cli, monkeypatch):
    data = _tiny_split_data(tmp_path / f"d{num_train}", num_train)
    before = _snapshot(tmp_path)
    assert_error_line(cli("train-features", "--data", data, *TINY, "--epochs", "1", "--out", tmp_path / "f.safetensors"),
                      str(data), f"{num_train} image")
    _no_work(monkeypatch)
    assert_error_line(cli("run", "--data", data, "--run-dir", tmp_path / "run", "--device", "cpu", "--quiet",
                          "--width", "0.0625"), str(data))
    if num_train == 0:
        assert_error_line(cli("eval-knn", "--baseline", "pixels", "--data", data, "--device", "cpu"),
                          "holds no images")
        assert_error_line(cli("eval-knn", "--baseline", "random", "--data", data, "--device", "cpu",
                              "--width", "0.0625"), "holds no images")
    assert _snapshot(tmp_path) == before


def test_labels_outside_the_class_list_are_refused(tmp_path):
    from isl_cli.data.sources.shapes import read_shapes
    from isl_cli.data.store import Split, load_split, save_dataset
    from isl_cli.errors import IslError

    train, test = read_shapes(num_train=8, num_test=4, seed=1)
    labels = train.labels.clone()
    labels[3] = len(train.classes)  # one past the last class
    bad = Split(labels=labels, classes=train.classes, images=train.images, name="shapes", split="train")
    save_dataset(tmp_path / "d", bad, test)
    with pytest.raises(IslError, match=r"label 10 is outside the class list \(labels 0..9"):
        load_split(tmp_path / "d", "train")
    labels[3] = -2
    save_dataset(tmp_path / "e", Split(labels=labels, classes=train.classes, images=train.images), test)
    with pytest.raises(IslError, match="label -2 is outside"):
        load_split(tmp_path / "e", "train")


# --------------------------------------------------------------------------- 5. metadata covered by a digest


def _edit_backbone(source: Path, target: Path, name: str, value, *, drop: tuple[str, ...] = ()) -> Path:
    """A copy of a features file whose backbone description has `name` set to `value` (and the metadata keys `drop`
    removed), its tensor data untouched: what an editor does to a file."""
    raw = source.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    metadata = header["__metadata__"]
    meta = json.loads(metadata["isl.meta"])
    if name:
        meta["backbone"][name] = value
    metadata["isl.meta"] = json.dumps(meta, sort_keys=True)
    for key in drop:
        metadata.pop(key)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    target.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + length:])
    return target


def _flip_bit_in_config(source: Path, target: Path) -> Path:
    """One flipped bit in isl.config: its arch "resnet18" becomes "resnet08" ('1' is 0x31, '0' is 0x30)."""
    raw = bytearray(source.read_bytes())
    (length,) = struct.unpack("<Q", raw[:8])
    config = raw.index(b'"isl.config":"', 8, 8 + length)
    at = raw.index(b'\\"arch\\": \\"resnet18', config, 8 + length) + len(b'\\"arch\\": \\"resnet')
    raw[at] ^= 0x01
    target.write_bytes(bytes(raw))
    with safe_open(str(target), "pt") as handle:
        assert json.loads(handle.metadata()["isl.config"])["arch"] == "resnet08"
    return target


def test_one_flipped_bit_in_the_metadata_is_refused_by_every_reader(made, tiny_data, tmp_path, cli):
    flipped = _flip_bit_in_config(made["features"], tmp_path / "r0-features.safetensors")
    before = flipped.read_bytes()
    for command in (["eval-knn", flipped, "--device", "cpu"],
                    ["train-gan", "--features", flipped, *TINY_GAN, "--out", tmp_path / "g.safetensors"],
                    ["export", flipped, "--out", tmp_path / "b.safetensors"],
                    ["train-features", "--data", tiny_data, "--init", flipped, *TINY, "--out",
                     tmp_path / "f2.safetensors"],
                    ["report", tmp_path, "--device", "cpu"]):
        assert_error_line(cli(*command), str(flipped), "corrupt", "metadata")
    result = cli("inspect", flipped)  # still described, then refused
    assert "DOES NOT MATCH" in result.stdout
    assert_error_line(result, "corrupt", "metadata")
    assert flipped.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [flipped.name]


def test_inspect_says_when_the_tensor_digest_fails(made, tmp_path, cli):
    copy = tmp_path / "f.safetensors"
    raw = bytearray(made["features"].read_bytes())
    raw[-3] ^= 0x01  # inside the last tensor's data
    copy.write_bytes(bytes(raw))
    result = cli("inspect", copy, "--json")
    assert json.loads(result.stdout)["verified"] == {"metadata": True, "tensors": False}
    assert_error_line(result, "corrupt", "tensor data")
    good = cli("inspect", made["features"])
    assert good.exit_code == 0 and good.stdout.count("(verified)") == 2


def test_report_checks_every_stage_file_before_drawing(made, tmp_path, cli):
    for path in made.values():
        shutil.copy(path, tmp_path / path.name)
    gan = tmp_path / made["gan"].name
    raw = bytearray(gan.read_bytes())
    raw[-5] ^= 0x01  # the GAN's tensors: the figures use its losses from the header, never these bytes
    gan.write_bytes(bytes(raw))
    before = _snapshot(tmp_path)
    assert_error_line(cli("report", tmp_path, "--device", "cpu"), str(gan), "corrupt", "tensor data")
    assert _snapshot(tmp_path) == before  # no figure drawn


@pytest.mark.parametrize("name, value, fragment", [
    ("width", 1000.0, "do not fit"),
    ("image_size", -32, "image_size"),
    ("arch", "resnet08", "resnet08"),
])
def test_an_edited_backbone_description_is_refused(name, value, fragment, made, tiny_data, tmp_path, cli):
    edited = _edit_backbone(made["features"], tmp_path / "edited.safetensors", name, value)
    assert_error_line(cli("eval-knn", edited, "--device", "cpu"), "corrupt", "metadata")  # the digest sees it
    # a file without a metadata digest (older isl, or made by hand): every field is still checked on read
    unsigned = _edit_backbone(made["features"], tmp_path / "unsigned.safetensors", name, value, drop=(META_DIGEST_KEY,))
    for command in (["eval-knn", unsigned, "--device", "cpu"],
                    ["export", unsigned, "--out", tmp_path / "b.safetensors"],
                    ["train-gan", "--features", unsigned, *TINY_GAN, "--out", tmp_path / "g.safetensors"],
                    ["train-features", "--data", tiny_data, "--init", unsigned, *TINY, "--out",
                     tmp_path / "f.safetensors"]):
        assert_error_line(cli(*command), str(unsigned), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.safetensors", "unsigned.safetensors"]


def test_files_without_a_metadata_digest_still_load(made, tmp_path):
    from isl_cli.artifacts import read_artifact

    old = _edit_backbone(made["features"], tmp_path / "old.safetensors", "", None, drop=(META_DIGEST_KEY,))
    assert read_artifact(old, "features").kind == "features"
    assert read_header(made["features"]).raw_metadata[META_DIGEST_KEY].startswith("sha256:")


# --------------------------------------------------------------------------- 6. file names that are not UTF-8


def test_image_folder_with_a_file_name_that_is_not_utf8(tmp_path, cli):
    from PIL import Image

    from isl_cli.data.store import load_split

    for split in ("train", "test"):
        folder = tmp_path / "src" / split / "a"
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / "0.png")
        Image.new("RGB", (12, 10)).save(folder / "1.png")  # mixed sizes: a file index, paths stored
    odd = os.fsencode(tmp_path / "src" / "train" / "a") + b"/\xff\xfe-latin1-\xe9.png"
    shutil.copy(tmp_path / "src" / "train" / "a" / "0.png", odd)
    result = cli("fetch-data", "imagefolder", "--source", tmp_path / "src", "--root", tmp_path / "data", "--quiet")
    assert result.exit_code == 0, result.output
    train = load_split(tmp_path / "data" / "imagefolder", "train")
    stored = [p for p in train.paths if "latin1" in p]
    assert len(train) == 3 and len(stored) == 1
    assert os.fsencode(Path(train.image_root) / stored[0]) == odd  # the exact bytes of the name
    with Image.open(Path(train.image_root) / stored[0]) as image:
        assert image.size == (8, 8)


# --------------------------------------------------------------------------- 7. symbolic links as output folders


def _bad_link(tmp_path: Path, kind: str) -> Path:
    link = tmp_path / f"{kind}-link"
    if kind == "loop":
        link.symlink_to(tmp_path / "other-link")
        (tmp_path / "other-link").symlink_to(link)
    else:
        link.symlink_to(tmp_path / "missing" / "folder")
    return link


@pytest.mark.parametrize("kind", ["loop", "dangling"])
def test_a_link_that_leads_nowhere_as_an_output_folder(kind, tiny_data, tmp_path, cli, monkeypatch):
    _no_work(monkeypatch)
    link = _bad_link(tmp_path, kind)
    before = _snapshot(tmp_path)
    assert_error_line(cli("fetch-data", "shapes", "--root", link, "--num-train", "8", "--num-test", "4", "--quiet"),
                      "--root", str(link))
    assert_error_line(cli("run", "--data", tiny_data, "--run-dir", link, "--device", "cpu", "--quiet"),
                      "--run-dir", str(link))
    assert_error_line(cli("run", "--data", tiny_data, "--run-dir", link / "x", "--device", "cpu", "--quiet"),
                      "--run-dir", str(link))
    assert_error_line(cli("train-features", "--data", tiny_data, *TINY, "--out", link / "f.safetensors"),
                      "--out", str(link))
    assert_error_line(cli("train-features", "--data", tiny_data, *TINY, "--out", link), "--out", str(link))
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------- 8. our own lock and temp names as inputs


@pytest.mark.parametrize("name", [".f.safetensors.lock", ".f.safetensors.0badc0de.tmp", ".tmpAbC123"])
def test_lock_and_temporary_names_are_never_inputs(name, made, tiny_data, tmp_path, cli):
    init = tmp_path / name
    shutil.copy(made["features"], init)  # a valid features file, under one of isl's own names
    before = init.read_bytes()
    result = cli("train-features", "--data", tiny_data, "--init", init, *TINY, "--epochs", "1", "--eval-k", "5",
                 "--out", tmp_path / "f.safetensors")
    assert_error_line(result, str(init), "isl", "cannot be an input")
    gan_init = tmp_path / ".g.safetensors.lock"
    shutil.copy(made["gan"], gan_init)
    assert_error_line(cli("train-gan", "--features", made["features"], "--init", gan_init, *TINY_GAN, "--epochs", "1",
                          "--out", tmp_path / "g.safetensors"), "cannot be an input")
    assert init.read_bytes() == before and gan_init.read_bytes() == made["gan"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, gan_init.name])


# --------------------------------------------------------------------------- the minor ones


def test_neighbours_pairing_an_image_with_itself_are_refused(made, tiny_data, tmp_path, cli):
    from isl_cli.checkpoints import save_neighbors

    fingerprint = read_header(made["features"]).fingerprint
    path = tmp_path / "self.safetensors"
    save_neighbors(path, torch.tensor([[0, 1], [5, 5]]), fingerprint=fingerprint, num_images=96, round_index=0)
    assert_error_line(cli("train-features", "--data", tiny_data, "--neighbors", path, *TINY, "--epochs", "1",
                          "--out", tmp_path / "f.safetensors"), "row 1 pairs image 5 with itself")
    assert not (tmp_path / "f.safetensors").exists()


def test_out_ending_in_a_slash_is_refused(tiny_data, made, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_error_line(cli("train-features", "--data", tiny_data, *TINY, "--epochs", "1", "--out", "newdir/"),
                      "--out newdir/", "folder")
    assert_error_line(cli("export", made["features"], "--out", "newdir/"), "--out newdir/")
    assert list(tmp_path.iterdir()) == []


def test_export_npy_writes_the_name_given(made, tmp_path, cli):
    import numpy as np

    result = cli("export", made["features"], "--what", "embeddings", "--format", "npy", "--out", tmp_path / "e.bin",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.bin", "e.bin.indices.npy", "e.bin.labels.npy"]
    assert np.load(tmp_path / "e.bin", allow_pickle=False).shape == (48, 16)


def test_full_disk_on_the_second_split_leaves_no_half_data_set(tmp_path, cli, monkeypatch):
    import errno

    from isl_cli import artifacts

    real = artifacts._serialise
    calls = {"n": 0}

    def second_fails(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(artifacts, "_serialise", second_fails)
    result = cli("fetch-data", "shapes", "--root", tmp_path, "--num-train", "8", "--num-test", "4", "--quiet")
    assert_error_line(result, "cannot write", "No space left")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # neither split, no temporary file
    # and a data set already there stays whole: both splits as they were
    monkeypatch.setattr(artifacts, "_serialise", real)
    assert cli("fetch-data", "shapes", "--root", tmp_path, "--num-train", "8", "--num-test", "4").exit_code == 0
    before = _snapshot(tmp_path)
    calls["n"] = 0
    monkeypatch.setattr(artifacts, "_serialise", second_fails)
    result = cli("fetch-data", "shapes", "--root", tmp_path, "--num-train", "8", "--num-test", "4", "--force",
                 "--seed", "5", "--quiet")
    assert_error_line(result, "cannot write")
    assert _snapshot(tmp_path) == before
