"""`isl mine-neighbors`: GAN proxies turned into new neighbour pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from isl_cli.cli.common import (
    DeviceOpt,
    FeaturesOpt,
    OverwriteOpt,
    QuietOpt,
    RecordedDataOpt,
    RoundOpt,
    StagePresetOpt,
    ThreadsOpt,
    compute_device,
    console,
    file_path,
    field_table,
    require_features,
    resume_command,
    sibling,
)
from isl_cli.cli.options import StageAmpOpt, StageChannelsLastOpt, stage_options
from isl_cli import checks
from isl_cli.config import MineConfig, override, preset_configs
from isl_cli.errors import IslError

Opt = typer.Option


@stage_options(MineConfig)
def mine_neighbors(
    features: FeaturesOpt = None,
    data: RecordedDataOpt = None,
    gan: Annotated[Optional[Path], Opt("--gan", help="GAN trained on these features \\[default: FEATURES with 'features' -> 'gan']; not with --miner similarity.", show_default=False)] = None,
    neighbors: Annotated[Optional[Path], Opt("--neighbors", help="Graph to grow \\[default: the one the features were trained with]. Never modified.", show_default=False)] = None,
    out: Annotated[Optional[Path], Opt("--out", help="New neighbors file, old edges plus new \\[default: FEATURES with 'features' -> 'neighbors'].", show_default=False, parser=file_path)] = None,
    preset: StagePresetOpt = "paper",
    amp: StageAmpOpt = None,
    channels_last: StageChannelsLastOpt = False,
    changes: dict[str, Any] = None,  # every MineConfig option (field -> typed value or None): cli/options.py
    round_index: RoundOpt = None,
    resume: Annotated[bool, Opt("--resume", help="Continue an interrupted run at the next pass from OUT.partial.safetensors (written after every pass).")] = False,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Mine neighbour pairs: for each image whose proxy the discriminator trusts (s > tau), the bank rows among the
    10 nearest the proxy within radius r join its neighbour set, symmetrically. As in the reference, every round
    runs at least one pass (even when the graph already exceeds its quota); passes then repeat until the round's
    quota of (round+1) x 0.5 x N entries is exceeded or --max-passes. The graph is saved after every pass, so
    --resume continues at the next pass and ends as an uninterrupted run would. Labels, when known, are used only to report
    the precision of the mined pairs. Features with an ImageNet backbone take the ImageNet settings
    (tau = R = 0.3, batch 256), and the first log line says so.

    The report counts what each test rejected: proxies scored at most tau, candidates outside the radius, and
    proposals that were neighbours already. --stop-after-empty N ends a round after N passes in a row that add nothing,
    with a line saying what to try. --miner similarity mines without a GAN: the most similar non-neighbour pairs of
    the bank, as many as the quota needs, in one pass (the plain-similarity rival, in the style of AND).

    Example

    $ isl mine-neighbors --features runs/me/r0-features.safetensors

    $ isl mine-neighbors --features runs/me/r0-features.safetensors --miner similarity
    """
    from isl_cli.artifacts import read_header

    from isl_cli.engine.mine import MineJob, mine_neighbors as run_stage
    from isl_cli.threads import apply_threads

    apply_threads(threads)

    features = require_features(features)
    header = read_header(features, "features")
    imagenet = header.meta.get("backbone", {}).get("variant") == "imagenet"
    preset_features, _, base = preset_configs(preset, imagenet)
    config = override(base, **changes)
    config.validate()
    checks.training_batch(config.batch_size, batch_norm=False)
    torch_device = compute_device(device)
    bank = header.tensors.get("bank.memory")
    checks.draws_fit(config.batch_size, config.num_draws, bank.shape[0] if bank is not None else None, torch_device)
    out = out or sibling(features, "neighbors")
    checks.writable_folder(out)
    if config.miner == "none":
        raise IslError("--miner none mines nothing (it is isl run's control); use gan or similarity")
    if config.miner == "similarity" and gan is not None:
        raise IslError("--gan is not used by --miner similarity (it mines the bank alone); drop one of them")
    if config.miner == "gan":
        gan = gan or sibling(features, "gan")
    job = MineJob(config=config, features=features, gan=gan,
                  out=out, device=torch_device, neighbors=neighbors,
                  data_dir=data, round_index=round_index, overwrite=overwrite, progress=not quiet, resume=resume,
                  resume_command=resume_command("mine-neighbors"),
                  amp=amp or preset_features.amp, channels_last=channels_last or preset_features.channels_last)
    result = run_stage(job)
    table = field_table(f"neighbours {result.out} (round {result.round})", value_justify="right")
    stats = result.stats
    table.add_row("neighbour entries", f"{result.entries} (quota {result.quota}, {'reached' if result.reached else 'NOT reached'})")
    table.add_row("passes", str(result.passes))
    table.add_row("new pairs this round", str(stats.get("new_pairs", 0)))
    proposal_rows(table, stats)
    precision_rows(table, stats)
    table.add_row("time", f"{result.seconds:.1f} s")
    console.print(table)
    if stats.get("labels_note"):
        console.print(f"precision: share of same-label pairs; {stats['labels_note']}")


def proposal_rows(table, stats: dict) -> None:
    """What each mining test rejected (GAN miner; also shown by `isl inspect`)."""
    p = stats.get("proposals")
    if not p:
        return
    table.add_row("proxies scored", str(p["images"]))
    table.add_row("  rejected: score <= tau", f"{p['rejected_score']} (mean s {_fmt(p.get('score_mean'))}, "
                  f"max {_fmt(p.get('score_max'))})")
    table.add_row("  rejected: outside the radius", f"{p['rejected_radius']} of {p['candidates']} candidates")
    table.add_row("  rejected: neighbours already", f"{p['rejected_known']} of {p['proposed']} proposed pairs")
    if stats.get("stopped_empty") or not p["added"]:
        table.add_row("why it stopped", str(stats.get("reason", "")))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def precision_rows(table, stats: dict) -> None:
    """The precision figures of a neighbours file's stats (also shown by `isl inspect`)."""
    rows = (("precision", "precision, all pairs"), ("new_precision", "precision, new pairs"),
            ("similarity_precision", f"precision, {stats.get('similarity_pairs', 0)} pairs by plain similarity"),
            ("chance_precision", "precision by chance"), ("share_with_neighbors", "images with a neighbour"))
    for key, label in rows:
        if stats.get(key) is not None:
            table.add_row(label, f"{100 * stats[key]:.1f}%")
