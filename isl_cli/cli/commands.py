"""The table of commands: name, module, one-line summary, worked example."""

from __future__ import annotations

import importlib
import re

import typer
from typer.core import TyperCommand

from isl_cli.cli import common
from isl_cli.cli.common import guarded

# (command name, module under isl_cli.cli, function name, summary, example)
COMMANDS = [
    ("fetch-data", "fetch_data", "fetch_data", "Download or convert a data set into train/test artifacts.",
     "isl fetch-data shapes\n\nisl fetch-data cifar10 --source ~/Downloads/cifar-10-python.tar.gz"),
    ("train-features", "train_features", "train_features", "Train the backbone and memory bank (ISL loss).",
     "isl train-features --data data/shapes --arch resnet18 --width 0.25 --epochs 5 --out runs/shapes/r0-features.safetensors"
     "\n\nisl train-features --data data/shapes --width 0.25 --amp auto --channels-last --threads 2"),
    ("train-gan", "train_gan", "train_gan", "Train the triplet GAN on frozen features.",
     "isl train-gan --features runs/shapes/r0-features.safetensors --out runs/shapes/r0-gan.safetensors"
     "\n\nisl train-gan --features runs/shapes/r0-features.safetensors --amp auto --channels-last --threads 1"),
    ("mine-neighbors", "mine_neighbors", "mine_neighbors", "Mine new neighbour pairs with the GAN.",
     "isl mine-neighbors --features runs/shapes/r0-features.safetensors --gan runs/shapes/r0-gan.safetensors --out runs/shapes/r0-neighbors.safetensors\n\nisl mine-neighbors --features runs/shapes/r0-features.safetensors --resume   # after an interruption: continues at the next pass"
     "\n\nisl mine-neighbors --features runs/shapes/r0-features.safetensors --amp auto --channels-last"),
    ("eval-knn", "eval_knn", "eval_knn", "Weighted kNN accuracy of a features checkpoint.",
     "isl eval-knn runs/shapes/r0-features.safetensors --k 200 --k 20 --recompute\n\nisl eval-knn --baseline pixels --data data/shapes\n\nisl eval-knn --baseline random runs/shapes/r0-features.safetensors"
     "\n\nisl eval-knn runs/shapes/r0-features.safetensors --recompute --amp auto --channels-last"),
    ("eval-linear", "eval_linear", "eval_linear", "Linear-probe accuracy of a features checkpoint or exported backbone.",
     "isl eval-linear runs/shapes/r3-features.safetensors\n\nisl eval-linear backbone.safetensors --data data/cifar10 --layer embedding --json"),
    ("export", "export", "export", "Export the backbone or the embeddings of a checkpoint.",
     "isl export runs/shapes/r3-features.safetensors --what embeddings --split test --out test-emb.safetensors"
     "\n\nisl export runs/shapes/r3-features.safetensors --what embeddings --out train-emb.npy --split train --amp auto"),
    ("run", "run", "run", "Run the whole ISL schedule: rounds of features, GAN, mining; then evaluate.",
     "isl run --dataset shapes --preset quick\n\nisl run --dataset shapes --preset paper --amp auto --threads 2"),
    ("inspect", "inspect", "inspect", "Describe an artifact: kind, tensors, metadata and config.",
     "isl inspect data/shapes/train.safetensors --json"),
    ("report", "report", "report", "Draw PNG figures of a run folder.",
     "isl report runs/shapes"),
]


def _plain_metavars(command, ctx) -> None:
    """Flags show no `<bool>` type; repeatable options show their element type (`<int>`, not `<list[int]>`)."""
    for param in command.get_params(ctx):
        if getattr(param, "param_type_name", "") == "option" and param.metavar is None:
            if param.is_flag:
                param.metavar = ""
            elif param.multiple:
                param.metavar = re.sub(r"list\[(.*)\]", r"\1", param.display_type_rich(ctx) or "")


class IslCommand(TyperCommand):
    """A command whose --help reads cleanly at 80 columns.

    Flags show no `<bool>` type and repeatable options show their element type
    (`<int>`, not `<list[int]>`), so the option and type columns stay narrow and
    the help text keeps most of the width.
    """

    def format_help(self, ctx, formatter) -> None:  # click's Context and HelpFormatter (vendored by typer)
        _plain_metavars(self, ctx)
        super().format_help(ctx, formatter)


class IslGroup(common.IslGroup):
    """The root `isl` group: one line for an option that cannot be parsed (`common.IslGroup`), and flags
    (--version, --debug, the completion ones, --help) that show no `<bool>`, as the commands' do."""

    def format_help(self, ctx, formatter) -> None:
        _plain_metavars(self, ctx)
        super().format_help(ctx, formatter)


def reflow(text: str) -> str:
    """Join a docstring's hand-wrapped lines into paragraphs (Rich keeps single newlines as line breaks).

    Blank lines separate paragraphs; a line starting with `[` (a bold heading) or `-` starts a new one.
    """
    lines = [line.strip() for line in text.strip().splitlines()]
    out: list[str] = []
    for line in lines:
        if out and line and out[-1] and not line.startswith(("[", "-")):
            out[-1] += " " + line
        else:
            out.append(line)
    return "\n".join(out)


def register(app: typer.Typer) -> None:
    """Add every command to `app`; modules are imported here, not at package import."""
    for name, module_name, func_name, summary, example in COMMANDS:
        module = importlib.import_module(f"isl_cli.cli.{module_name}")
        func = getattr(module, func_name)
        epilog = "[bold]Example[/bold]\n\n" + "\n\n".join(f"  $ {line}" for line in example.split("\n\n"))
        app.command(name=name, cls=IslCommand, help=reflow(func.__doc__ or summary), short_help=summary,
                    epilog=epilog)(guarded(func))
