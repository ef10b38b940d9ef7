"""Batch sources over tensor and file-backed splits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from isl_cli.data.augment import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, BatchAugment, normalize
from isl_cli.data.batches import batch_bounds, make_batch_source, sample_seed
from isl_cli.data.store import Split
from isl_cli.data.transforms import eval_resize_size, eval_transform
from isl_cli.errors import IslError


def _tensor_split(n: int, size: int = 8, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return Split(labels=torch.arange(n) % 3, classes=["a", "b", "c"], images=images, name="tiny")


def _source(split: Split, train: bool = True, batch_size: int = 4, output_size: int = 8, **kwargs):
    return make_batch_source(split, train=train, batch_size=batch_size, device="cpu", output_size=output_size,
                             mean=CIFAR_MEAN, std=CIFAR_STD, **kwargs)


def _epoch(source, seed: int | None):
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return list(source.batches(generator))


def test_batch_bounds_keep_partial_batches_and_drop_only_a_single_tail():
    assert batch_bounds(10, 4, True) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4, True) == [(0, 4), (4, 8)]
    assert batch_bounds(9, 4, False) == [(0, 4), (4, 8), (8, 9)]
    assert batch_bounds(8, 4, True) == [(0, 4), (4, 8)]


@pytest.mark.parametrize("n, expected_batches, expected_seen", [(10, 3, 10), (9, 2, 8), (8, 2, 8)])
def test_train_epoch_visits_every_index_once_except_a_dropped_single_tail(n, expected_batches, expected_seen):
    source = _source(_tensor_split(n))
    batches = _epoch(source, seed=1)
    assert len(batches) == expected_batches == source.num_batches()
    seen = torch.cat([indices for indices, _ in batches])
    assert seen.dtype == torch.int64 and len(seen) == expected_seen
    assert len(torch.unique(seen)) == expected_seen and int(seen.min()) >= 0 and int(seen.max()) < n
    assert not torch.equal(seen, torch.arange(expected_seen))  # shuffled
    for indices, images in batches:
        assert images.shape == (len(indices), 3, 8, 8) and images.dtype == torch.float32


def test_train_batches_are_the_documented_permutation_then_augmentation():
    split = _tensor_split(10)
    source = _source(split)
    batches = _epoch(source, seed=3)
    g = torch.Generator().manual_seed(3)
    order = torch.randperm(10, generator=g)
    aug = BatchAugment(8, CIFAR_MEAN, CIFAR_STD)
    params = aug.sample(10, 8, 8, g)
    for (start, end), (indices, images) in zip(batch_bounds(10, 4, True), batches):
        assert torch.equal(indices, order[start:end])
        expected = aug.apply(split.images[order[start:end]], params.rows(start, end))
        torch.testing.assert_close(images, expected, atol=1e-6, rtol=0)
    # augmented, not merely normalised
    assert not torch.allclose(batches[0][1], normalize(split.images[batches[0][0]], CIFAR_MEAN, CIFAR_STD))


def test_same_seed_same_batches_other_seed_different():
    source = _source(_tensor_split(10))
    first, again, other = _epoch(source, 5), _epoch(source, 5), _epoch(source, 6)
    for (i1, x1), (i2, x2) in zip(first, again):
        assert torch.equal(i1, i2) and torch.equal(x1, x2)
    assert not torch.equal(torch.cat([i for i, _ in first]), torch.cat([i for i, _ in other]))


def test_start_skips_batches_and_leaves_the_rest_unchanged():
    source = _source(_tensor_split(11), batch_size=3)
    full = _epoch(source, seed=7)
    tail = list(source.batches(torch.Generator().manual_seed(7), start=2))
    assert len(full) == 4 and len(tail) == 2
    for (i1, x1), (i2, x2) in zip(full[2:], tail):
        assert torch.equal(i1, i2) and torch.equal(x1, x2)
    assert torch.equal(torch.cat([i for i, _ in source.batches(None, start=3)]), torch.tensor([9, 10]))
    assert list(source.batches(None, start=9)) == []
    with pytest.raises(ValueError):
        source.batches(None, start=-1)


@pytest.mark.parametrize("output_size", [8, 4])
def test_eval_pass_is_in_order_normalised_only_and_keeps_a_single_tail(output_size):
    split = _tensor_split(9)
    source = _source(split, output_size=output_size)
    batches = _epoch(source, seed=None)
    assert len(batches) == 3 == source.num_batches(shuffled=False)
    assert torch.equal(torch.cat([i for i, _ in batches]), torch.arange(9))
    images = torch.cat([x for _, x in batches])
    assert images.shape == (9, 3, output_size, output_size)
    torch.testing.assert_close(images, normalize(split.images, CIFAR_MEAN, CIFAR_STD, output_size), atol=0, rtol=0)
    if output_size == 8:  # the plain formula (x / 255 - mean) / std
        mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
        torch.testing.assert_close(images, (split.images.float() / 255 - mean) / std, atol=1e-6, rtol=0)


def test_eval_source_with_a_generator_shuffles_without_augmenting():
    split = _tensor_split(9)
    source = _source(split, train=False)
    batches = _epoch(source, seed=2)
    assert len(batches) == 3 == source.num_batches()
    seen = torch.cat([i for i, _ in batches])
    assert sorted(seen.tolist()) == list(range(9)) and not torch.equal(seen, torch.arange(9))
    for indices, images in batches:
        torch.testing.assert_close(images, normalize(split.images[indices], CIFAR_MEAN, CIFAR_STD), atol=0, rtol=0)


def test_subset_restricts_to_those_images_and_yields_global_indices():
    split = _tensor_split(12)
    subset = torch.tensor([11, 2, 7, 5, 0])
    train = _source(split, subset=subset, batch_size=2)
    assert train.num_images == 5 and train.num_batches() == 2  # 2 + 2, single tail dropped
    seen = torch.cat([i for i, _ in _epoch(train, 4)])
    assert set(seen.tolist()) <= set(subset.tolist()) and len(seen) == 4
    evaluation = _source(split, train=False, subset=subset, batch_size=2)
    batches = _epoch(evaluation, None)
    indices = torch.cat([i for i, _ in batches])
    assert torch.equal(indices, subset)
    images = torch.cat([x for _, x in batches])
    torch.testing.assert_close(images, normalize(split.images[subset], CIFAR_MEAN, CIFAR_STD), atol=0, rtol=0)


@pytest.mark.parametrize("subset", [torch.tensor([0, 12]), torch.tensor([1, 1]), torch.tensor([], dtype=torch.int64),
                                    torch.tensor([0.0, 1.0]), torch.tensor([[0, 1]])])
def test_bad_subsets_are_rejected(subset):
    with pytest.raises(ValueError):
        _source(_tensor_split(12), subset=subset)


def test_bad_arguments_are_rejected():
    split = _tensor_split(4)
    with pytest.raises(ValueError):
        _source(split, batch_size=0)
    with pytest.raises(ValueError):
        _source(split, output_size=0)
    with pytest.raises(ValueError):
        _source(split, subset=torch.tensor([2]))  # a training source of one image
    files = Split(labels=torch.zeros(2, dtype=torch.int64), classes=["x"], paths=["a.png", "b.png"], image_root=".")
    with pytest.raises(ValueError):
        _source(files, num_workers=-1)


def test_imagenet_style_tensor_source_flips_and_grayscales_first():
    source = _source(_tensor_split(4), imagenet_style=True)
    assert source.augment.hflip and source.augment.grayscale_first
    plain = _source(_tensor_split(4))
    assert not plain.augment.hflip and not plain.augment.grayscale_first


# ---------------------------------------------------------------- file-backed


def _png_folder(root: Path, n: int = 7) -> list[str]:
    g = torch.Generator().manual_seed(0)
    paths = []
    for i in range(n):
        height, width = 10 + i % 3, 12 - i % 2
        pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=g).numpy()
        name = f"class{i % 2}/img{i}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels)
        (image.convert("L") if i == 3 else image).save(root / name)  # one grayscale file
        paths.append(name)
    return paths


def _file_split(root: Path, n: int = 7) -> Split:
    paths = _png_folder(root, n)
    return Split(labels=torch.arange(n) % 2, classes=["c0", "c1"], paths=paths, image_root=str(root), name="pngs")


def test_file_backed_train_batches_do_not_depend_on_worker_count(tmp_path):
    split = _file_split(tmp_path)
    single = _source(split, batch_size=3, num_workers=0)
    assert single.num_batches() == 2  # 3 + 3, single tail dropped
    state = torch.get_rng_state()
    serial = _epoch(single, seed=8)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG is left alone
    workers = _source(split, batch_size=3, num_workers=2)
    stream = workers.batches(torch.Generator().manual_seed(8))
    next(stream)
    stream.close()  # leaving an epoch early stops its workers
    parallel = _epoch(workers, seed=8)
    assert len(serial) == len(parallel) == 2
    for (i1, x1), (i2, x2) in zip(serial, parallel):
        assert torch.equal(i1, i2) and torch.equal(x1, x2)
        assert x1.shape == (3, 3, 8, 8) and x1.dtype == torch.float32 and i1.dtype == torch.int64
    seen = torch.cat([i for i, _ in serial])
    assert len(torch.unique(seen)) == 6
    other = _epoch(single, seed=9)
    assert not torch.equal(torch.cat([x for _, x in other]), torch.cat([x for _, x in serial]))
    again = _epoch(single, seed=8)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(serial, again))
    (i_tail, x_tail), = single.batches(torch.Generator().manual_seed(8), start=1)
    assert torch.equal(i_tail, serial[1][0]) and torch.equal(x_tail, serial[1][1])


def test_file_backed_eval_is_in_order_and_applies_resize_and_centre_crop(tmp_path):
    split = _file_split(tmp_path)
    source = _source(split, train=False, batch_size=4, subset=torch.tensor([1, 3, 4, 6, 0]))
    batches = _epoch(source, None)
    assert [len(i) for i, _ in batches] == [4, 1]
    indices = torch.cat([i for i, _ in batches])
    assert torch.equal(indices, torch.tensor([1, 3, 4, 6, 0]))
    images = torch.cat([x for _, x in batches])
    tf = eval_transform(8, CIFAR_MEAN, CIFAR_STD, imagenet_style=False)
    for row, index in enumerate(indices.tolist()):
        with Image.open(tmp_path / split.paths[index]) as image:
            expected = tf(image.convert("RGB"))
        assert torch.equal(images[row], expected)


def test_file_backed_train_sample_uses_its_own_seed(tmp_path):
    """Image i of an epoch is the train transform run under sample_seed(epoch seed, i)."""
    split = _file_split(tmp_path, n=4)
    source = _source(split, batch_size=4, imagenet_style=True, output_size=8)
    (indices, images), = _epoch(source, seed=10)
    g = torch.Generator().manual_seed(10)
    order = torch.randperm(4, generator=g)
    epoch_seed = int(torch.randint(0, 2**62, (1,), generator=g))
    assert torch.equal(indices, order)
    for row, index in enumerate(order.tolist()):
        with Image.open(tmp_path / split.paths[index]) as image:
            rgb = image.convert("RGB")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(epoch_seed, index))
            expected = source.dataset.train_tf(rgb)
        assert torch.equal(images[row], expected)


def test_imagenet_eval_resize_is_256_for_both_crops():
    assert eval_resize_size(224, imagenet_style=True) == 256
    assert eval_resize_size(227, imagenet_style=True) == 256  # the reference's AlexNet: Resize(256) + CenterCrop(227)
    assert eval_resize_size(32, imagenet_style=False) == 32
    tf = eval_transform(224, IMAGENET_MEAN, IMAGENET_STD, imagenet_style=True)
    assert tf(Image.new("RGB", (300, 400))).shape == (3, 224, 224)
    from torchvision import transforms as T

    image = Image.fromarray(torch.randint(0, 256, (300, 400, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy())
    ours = eval_transform(227, IMAGENET_MEAN, IMAGENET_STD, imagenet_style=True)(image)
    reference = T.Compose([T.Resize(256), T.CenterCrop(227), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(image)
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_unreadable_image_is_one_line_isl_error(tmp_path, num_workers):
    split = _file_split(tmp_path, n=3)
    (tmp_path / split.paths[1]).write_bytes(b"not a png")
    source = _source(split, train=False, batch_size=3, num_workers=num_workers)
    with pytest.raises(IslError) as excinfo:
        _epoch(source, None)
    message = str(excinfo.value)
    assert "\n" not in message and split.paths[1] in message


def test_missing_image_folder_is_isl_error(tmp_path):
    split = Split(labels=torch.zeros(2, dtype=torch.int64), classes=["x"], paths=["a.png", "b.png"],
                  image_root=str(tmp_path / "gone"))
    with pytest.raises(IslError, match="not found"):
        _source(split)


def test_tensor_source_keeps_everything_on_its_device_without_host_reads():
    """The meta device stands in for an accelerator: a host read in the loop would raise."""
    source = make_batch_source(_tensor_split(6), train=True, batch_size=4, device="meta", output_size=8,
                               mean=CIFAR_MEAN, std=CIFAR_STD)
    for generator in (torch.Generator().manual_seed(0), None):
        for indices, images in source.batches(generator):
            assert indices.device.type == "meta" and images.device.type == "meta"
            assert images.shape[1:] == (3, 8, 8)
