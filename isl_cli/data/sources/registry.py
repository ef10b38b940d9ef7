"""What `isl fetch-data` knows: the data set names, official files, URLs, checksums.

The checksum and URL tables are module-level dictionaries on purpose: tests
point them at archives they build themselves (same layout as the official
ones) and at a local HTTP server, and the real code paths run unchanged.
The MD5 sums are the published ones of the official archives (the same facts
torchvision records; CIFAR binary sums from the CIFAR page).
"""

from __future__ import annotations

from dataclasses import dataclass

from isl_cli.errors import IslError


@dataclass(frozen=True)
class DatasetInfo:
    """One name `isl fetch-data` accepts.

    Attributes:
        name: the NAME argument.
        summary: one line for `--help` and error messages.
        downloads: keys of `DOWNLOAD_URLS` fetched when no `--source` is given
            (empty: nothing can be downloaded).
        takes_source: whether `--source` is accepted.
        needs_source: whether `--source` is required.
    """

    name: str
    summary: str
    downloads: tuple[str, ...] = ()
    takes_source: bool = True
    needs_source: bool = False


_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("shapes", "synthetic 32x32 shapes, 10 classes, generated offline", takes_source=False),
        DatasetInfo("cifar10", "CIFAR-10, 50,000 + 10,000 images 32x32, 10 classes",
                    downloads=("cifar10/cifar-10-python.tar.gz",)),
        DatasetInfo("cifar100", "CIFAR-100, 50,000 + 10,000 images 32x32, 100 fine classes",
                    downloads=("cifar100/cifar-100-python.tar.gz",)),
        DatasetInfo("svhn", "SVHN cropped digits, 73,257 + 26,032 images 32x32, 10 classes",
                    downloads=("svhn/train_32x32.mat", "svhn/test_32x32.mat")),
        DatasetInfo("mnist", "MNIST digits, 60,000 + 10,000, grey 28x28 stored as RGB 32x32",
                    downloads=tuple(f"mnist/{f}" for f in _MNIST_FILES)),
        DatasetInfo("fashion-mnist", "Fashion-MNIST, 60,000 + 10,000, grey 28x28 stored as RGB 32x32",
                    downloads=tuple(f"fashion-mnist/{f}" for f in _MNIST_FILES)),
        DatasetInfo("imagefolder", "your images: DIR/{train,test}/<class>/* or a flat folder", needs_source=True),
        DatasetInfo("imagenet", "ILSVRC-2012 train/<wnid>/ and val/<wnid>/ folders, kept as files",
                    needs_source=True),
    )
}

# "<data set>/<file name>" -> MD5 of the official file. Also the cache path
# under <root>/downloads/.
OFFICIAL_MD5: dict[str, str] = {
    "cifar10/cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar10/cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
    "cifar100/cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar100/cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8",
    "svhn/train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "svhn/test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "mnist/train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "mnist/train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "mnist/t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "mnist/t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "fashion-mnist/train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "fashion-mnist/train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "fashion-mnist/t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "fashion-mnist/t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# "<data set>/<file name>" -> URLs to try in order.
DOWNLOAD_URLS: dict[str, tuple[str, ...]] = {
    "cifar10/cifar-10-python.tar.gz": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "cifar100/cifar-100-python.tar.gz": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
    "svhn/train_32x32.mat": ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
    "svhn/test_32x32.mat": ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
    **{f"mnist/{f}": tuple(m + f for m in _MNIST_MIRRORS) for f in _MNIST_FILES},
    **{f"fashion-mnist/{f}": (_FASHION_MIRROR + f,) for f in _MNIST_FILES},
}

MNIST_FILES = _MNIST_FILES

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DIGIT_CLASSES = [str(d) for d in range(10)]


def known_names() -> str:
    return ", ".join(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of `name`; IslError listing the known names otherwise."""
    info = DATASETS.get(name)
    if info is None:
        raise IslError(f"unknown data set {name!r}; known: {known_names()}")
    return info


def file_name(key: str) -> str:
    """The bare file name of a table key such as "svhn/train_32x32.mat"."""
    return key.rsplit("/", 1)[-1]
