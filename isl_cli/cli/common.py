"""What every command shares: consoles, option aliases, error handling."""

from __future__ import annotations

import functools
import os
import signal
import threading
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable

import typer
from rich.console import Console
from rich.table import Table
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer's own click
from typer.core import TyperGroup

from isl_cli.bounds import Bounds
from isl_cli.config import AMP_HELP, BATCH_BOUNDS, CHANNELS_LAST_HELP, SEED_BOUNDS, SEED_HELP
from isl_cli.errors import IslError, StageInterrupted

if TYPE_CHECKING:
    import torch

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class Settings:
    """Process-wide CLI settings filled by the root callback (never at import)."""

    debug: bool = False
    terminated: bool = False  # a SIGTERM (not a Ctrl-C) stopped the command: exit 143 instead of 130


def debug_enabled() -> bool:
    return Settings.debug or os.environ.get("ISL_DEBUG", "") not in ("", "0", "false", "no")


def fail(message: str) -> None:
    """Print one line on stderr (no wrapping, no markup)."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"isl: error: {text}\n")
    sys.stderr.flush()


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known errors into one stderr line and an exit code.

    IslError -> exit 2; StageInterrupted (Ctrl-C after a clean save) -> exit 130.
    SIGTERM (what SLURM and `kill` send) takes the same path as Ctrl-C and exits 143.
    With --debug or ISL_DEBUG=1 the traceback is shown instead.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous_term = _treat_sigterm_as_sigint()
        try:
            return fn(*args, **kwargs)
        except IslError as exc:
            if debug_enabled():
                raise
            fail(str(exc))
            raise typer.Exit(2) from None
        except StageInterrupted as exc:
            err_console.print(f"[yellow]{exc}[/yellow]")
            if exc.resume_command:
                err_console.print(f"resume with: [bold]{exc.resume_command}[/bold]", soft_wrap=True)
            raise typer.Exit(_interrupt_code()) from None
        except KeyboardInterrupt:
            fail("terminated (SIGTERM)" if Settings.terminated else "interrupted")
            raise typer.Exit(_interrupt_code()) from None
        finally:
            if previous_term is not None:
                signal.signal(signal.SIGTERM, previous_term)
            locks_module = sys.modules.get("isl_cli.locks")
            if locks_module is not None:
                locks_module.release_all()  # every lock the command took, whatever the exit path
            dist_module = sys.modules.get("isl_cli.distributed")
            if dist_module is not None and dist_module.context().enabled:
                dist_module.teardown()

    return wrapper


class IslGroup(TyperGroup):
    """The root `isl` group: an option that cannot be parsed is one line too, like every other refusal.

    A non-numeric value, an unknown option, a missing argument or a value outside its range (`within`) exits 2
    with one `isl: error:` line instead of Typer's usage panel; `isl` alone still shows the help.
    """

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError:  # Typer's own display of the help
            return super().main(args, prog_name, complete_var, standalone_mode=True, **extra)
        except IslError as exc:  # a value outside its range, refused while parsing (`within`, `file_path`)
            if debug_enabled():  # guarded() re-raised it for its traceback
                raise
            fail(str(exc))
            sys.exit(2)
        except ClickException as exc:
            fail(usage_line(exc))
            sys.exit(2)
        except typer.Abort:
            sys.stderr.write("Aborted!\n")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def usage_line(exc: ClickException) -> str:
    """Click's message for a usage error, with the command whose --help lists the options."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, UsageError) and ctx is not None:
        return f"{message} (see `{ctx.command_path} --help`)"
    return message


def within(bounds: Bounds, option: str) -> Callable[[Any], Any]:
    """An option callback that refuses a typed value outside `bounds` while the command line is parsed."""

    def callback(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            bounds.check_all(option, value)
        else:
            bounds.check(option, value)
        return value

    return callback


def file_path(value: str) -> Path:
    """An --out value: a file name. One ending in '/' names a folder (Path() would silently drop the '/')."""
    if value.endswith("/") or value.endswith(os.sep):
        raise IslError(f"--out {value}: ends with '/', so it names a folder; give a file name "
                       f"(e.g. {value.rstrip('/' + os.sep) or '.'}/out.safetensors)")
    return Path(value)


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM does what Ctrl-C does at this moment: a stage saves and stops, anything else stops."""
    Settings.terminated = True
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signum, frame)
    else:
        raise KeyboardInterrupt


def _treat_sigterm_as_sigint() -> Any:
    """Route SIGTERM through the SIGINT handler; returns the handler to restore (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    Settings.terminated = False
    return signal.signal(signal.SIGTERM, _on_sigterm)


def _interrupt_code() -> int:
    return 128 + signal.SIGTERM if Settings.terminated else 130


def emit(text: str) -> None:
    """Print machine-readable output (JSON) on stdout; silent on data-parallel ranks other than 0."""
    if not console.quiet:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def default_root() -> Path:
    return Path(os.environ.get("ISL_DATA", "data"))


# ---- option aliases shared by the commands (defined once; the stage options are generated: cli/options.py) ----
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="Compute device: auto (CUDA when present), cpu, cuda or mps.", show_default=True),
]
RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="Data root folder \\[default: $ISL_DATA or data/].", show_default=False),
]
SeedOpt = Annotated[int, typer.Option("--seed", help=SEED_HELP, callback=within(SEED_BOUNDS, "--seed"))]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="Intra-op threads of torch \\[default: torch's, i.e. OMP_NUM_THREADS or the core "
                 "count]. Running several isl processes on one machine: give each cores / processes threads.",
                 show_default=False),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output or checkpoint.")]
FeaturesOpt = Annotated[
    Path | None,
    typer.Option("--features", help="Features checkpoint from train-features (required).", show_default=False),
]
RecordedDataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Data set folder \\[default: the one the features checkpoint records].",
                 show_default=False),
]
ROUND_BOUNDS = Bounds(0, 1000, integer=True)
RoundOpt = Annotated[
    int | None, typer.Option("--round", help="Round number \\[default: the features' round].", show_default=False,
                             callback=within(ROUND_BOUNDS, "--round")),
]
StagePresetOpt = Annotated[
    str, typer.Option("--preset", help="paper (fp32 unless --amp), quick or cpu (both: --amp auto, --channels-last; see isl run --help)."),
]
# the evaluations: features recomputed in batches, at the precision asked for (no preset)
EvalBatchOpt = Annotated[int, typer.Option("--batch-size", help="Batch size for computing features.",
                                           callback=within(BATCH_BOUNDS, "--batch-size"))]
EvalAmpOpt = Annotated[str, typer.Option("--amp", help=AMP_HELP)]
EvalChannelsLastOpt = Annotated[bool, typer.Option("--channels-last", help=CHANNELS_LAST_HELP)]


def compute_device(name: str) -> "torch.device":
    """The device of this command: under torchrun, join the process group first (ranks other than 0 go quiet)."""
    from isl_cli import distributed
    from isl_cli.device import resolve_device

    if not distributed.launched_by_torchrun():
        return resolve_device(name)
    ctx, device = distributed.setup((name or "auto").lower())
    if not ctx.is_main:  # only rank 0 prints
        from isl_cli.engine import progress

        console.quiet = err_console.quiet = True
        progress.quiet()
    return device


def sibling(path: Path, stage: str) -> Path:
    """`runs/x/r0-features.safetensors` -> `runs/x/r0-<stage>.safetensors` (default outputs)."""
    name = path.name
    if "features" in name:
        return path.with_name(name.replace("features", stage, 1))
    stem = name[: -len(".safetensors")] if name.endswith(".safetensors") else name
    return path.with_name(f"{stem}-{stage}.safetensors")


def require_features(features: Path | None) -> Path:
    """The features checkpoint a stage needs, or one line saying to make it first."""
    if features is None:
        raise IslError("no features checkpoint given (--features): run `isl train-features` first "
                       "(round 0 is plain instance discrimination)")
    if not Path(features).exists():
        raise IslError(f"{features}: no such features checkpoint; run `isl train-features` first "
                       "(round 0 is plain instance discrimination)")
    return Path(features)


def resume_command(command: str) -> str:
    """The command line that resumes the current invocation (shown after Ctrl-C)."""
    import shlex

    argv = sys.argv[1:]
    if command in argv:
        argv = argv[argv.index(command):]
    else:
        argv = [command]
    args = [a for a in argv if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return "isl " + " ".join(shlex.quote(a) for a in args)


def dataset_is_imagenet(data_dir: Path, variant: str | None = None) -> bool:
    """Whether a data set takes the ImageNet presets: file-backed or larger than 64 px (or --variant imagenet)."""
    if variant is not None:
        return variant == "imagenet"
    path = Path(data_dir) / "train.safetensors"
    if not path.exists():
        return False
    from isl_cli.artifacts import read_header

    meta = read_header(path, "dataset").meta
    size = meta.get("image_size")
    return meta.get("storage") == "files" or size is None or int(size) > 64


def field_table(title: str, value_justify: str = "left") -> Table:
    """A headerless two-column table of bold field names and their values."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold", justify=value_justify)
    return table
