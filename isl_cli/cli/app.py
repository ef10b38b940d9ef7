"""The root `isl` app: wires the commands, nothing else."""

from __future__ import annotations

from typing import Annotated

import typer

from isl_cli import __version__
from isl_cli.cli import commands
from isl_cli.cli.common import Settings

app = typer.Typer(
    name="isl",
    cls=commands.IslGroup,  # an option that cannot be parsed is one `isl: error:` line, exit 2; no <bool> metavar
    help="Instance Similarity Learning (ICCV 2021): unsupervised image features, fast and resumable.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"isl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks (also ISL_DEBUG=1).")] = False,
) -> None:
    """Instance Similarity Learning (ICCV 2021): unsupervised image features, fast and resumable."""
    Settings.debug = debug


commands.register(app)


def main() -> None:
    """Console entry point of `isl`."""
    app(prog_name="isl")
