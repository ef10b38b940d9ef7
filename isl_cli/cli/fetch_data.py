"""`isl fetch-data NAME`: prepare a data set's train and test artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isl_cli.cli.common import RootOpt, ThreadsOpt, console, default_root, err_console, field_table, within
from isl_cli.config import SEED_BOUNDS
from isl_cli.errors import IslError

NAMES = "shapes, cifar10, cifar100, svhn, mnist, fashion-mnist, imagefolder, imagenet"


def fetch_data(
    name: Annotated[str, typer.Argument(help=f"Data set: {NAMES}.", show_default=False)],
    root: RootOpt = None,
    source: Annotated[
        Path | None,
        typer.Option("--source", help="Use local files instead of downloading: the official CIFAR .tar.gz "
                     "(python or binary), SVHN's train_32x32.mat/test_32x32.mat, the MNIST IDX .gz files, "
                     "or an image folder (required for imagefolder and imagenet).", show_default=False),
    ] = None,
    folder: Annotated[
        str | None, typer.Option("--name", help="Folder name under the root \\[default: NAME].", show_default=False)
    ] = None,
    size: Annotated[
        int | None,
        typer.Option("--size", help="Resize to SIZE x SIZE, 8 to 4096 (imagefolder: shorter side to SIZE, then "
                     "centre crop).", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-create even if a valid data set exists.")] = False,
    num_train: Annotated[
        int | None, typer.Option("--num-train", help="shapes only: training images \\[default: 5000].",
                                 show_default=False)
    ] = None,
    num_test: Annotated[
        int | None, typer.Option("--num-test", help="shapes only: test images \\[default: 1000].", show_default=False)
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="shapes only: generator seed \\[default: 0].", show_default=False,
                                 callback=within(SEED_BOUNDS, "--seed"))
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Download or convert a data set into [bold]<root>/<name>/train.safetensors[/bold] and [bold]test.safetensors[/bold].

    [bold]cifar10, cifar100, svhn, mnist, fashion-mnist[/bold]: the official files, downloaded into <root>/downloads/ (resumable, MD5-verified; a mismatching file is set aside as .corrupt) or taken from --source.
    [bold]shapes[/bold]: generated offline, 32x32, 10 shape classes (--num-train, --num-test, --seed).
    [bold]imagefolder[/bold]: --source DIR with train/<class>/ and test/<class>/ (or val/), or a flat folder of unlabelled images. Unreadable images are refused: they are listed and nothing is written.
    [bold]imagenet[/bold]: --source DIR with the ILSVRC-2012 train/<wnid>/ and val/<wnid>/ folders; stored as a file index (images are not opened here).

    An existing valid data set made with the same options is left alone unless --force.
    """
    from isl_cli.data.sources.fetch import fetch_dataset  # noqa: PLC0415  (heavy imports on use only)
    from isl_cli.data.sources.registry import dataset_info  # noqa: PLC0415
    from isl_cli.threads import apply_threads  # noqa: PLC0415

    apply_threads(threads)

    dataset_info(name)  # an unknown NAME fails first, listing the known ones
    if name != "shapes":
        given = [opt for opt, value in (("--num-train", num_train), ("--num-test", num_test), ("--seed", seed))
                 if value is not None]
        if given:
            raise IslError(f"{', '.join(given)}: only for shapes")
    from isl_cli import checks  # noqa: PLC0415
    from isl_cli.data.sources.fetch import NUM_IMAGES_BOUNDS, SIZE_BOUNDS  # noqa: PLC0415

    SIZE_BOUNDS.check("--size", size)  # the ranges before the memory they imply
    NUM_IMAGES_BOUNDS.check("--num-train", num_train)
    NUM_IMAGES_BOUNDS.check("--num-test", num_test)
    data_root = root or default_root()
    if name == "shapes":
        side = size or 32
        count = (5000 if num_train is None else num_train) + (1000 if num_test is None else num_test)
        checks.fits_in_memory(f"shapes with {count:,} images of {side}x{side}", count * (3 * side * side + 8))
    checks.writable_folder(data_root / (folder or name) / "train.safetensors", "--root", shown=data_root)
    outcome = fetch_dataset(
        name, data_root, source=source, folder_name=folder, size=size, force=force,
        seed=0 if seed is None else seed, num_train=5000 if num_train is None else num_train,
        num_test=1000 if num_test is None else num_test, progress=not quiet, console=err_console,
    )
    for note in outcome.notes:
        err_console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True)

    table = field_table(f"{outcome.path}")
    table.add_row("data set", outcome.name)
    table.add_row("folder", str(outcome.path))
    table.add_row("train / test", f"{outcome.num_train:,} / {outcome.num_test:,} images")
    table.add_row("images", f"{outcome.image_size}x{outcome.image_size} RGB uint8" if outcome.image_size
                  else "file index (decoded when read)" if outcome.storage == "files" else "tensor")
    shown = ", ".join(outcome.classes[:10]) + (f" ... ({len(outcome.classes)})" if len(outcome.classes) > 10 else "")
    table.add_row("classes", shown if outcome.classes else "none (unlabelled)")
    table.add_row("fingerprint", outcome.fingerprint)
    table.add_row("status", f"created in {outcome.seconds:.1f} s" if outcome.created else "already prepared")
    console.print(table)
