"""Frozen configs of each stage, with the paper's defaults, their command-line options, and named presets.

Defaults are the reference implementation's (docs/method.md). `paper_features`,
`paper_gan` and `paper_mine` pick the 32x32 or the ImageNet values; the `quick`
preset shrinks the work for a CPU, and `cpu` runs the paper's schedule at width
0.25 (docs/decisions.md). Every field but a derived one is an option of its
stage's command and of `isl run`, declared once here with `option` (flag, help,
name in `isl run`, range); `isl_cli.cli.options` turns the declarations into the
commands' options.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from isl_cli.bounds import Bounds
from isl_cli.errors import IslError

PRESETS = ("paper", "quick", "cpu")
MINERS = ("gan", "similarity", "none")

AMP_HELP = ("Precision of every backbone forward: none (fp32), bf16, auto (bf16 where the CPU or GPU does bf16 "
            "natively, e.g. AVX512-BF16 or AMX, else fp32) or fp16 (CUDA only: a CPU emulates it, about 10x slower "
            "than fp32, so it is refused there). The bank, the softmax over N, the losses, the GAN and the kNN stay "
            "fp32. The stage's first log line says what was chosen and why.")
CHANNELS_LAST_HELP = "channels-last memory format for the backbone (faster convolutions on CPUs and recent GPUs)."
SEED_HELP = "Random seed; the same seed on CPU gives bit-identical results."
BATCH_HELP = "Global batch size, summed over torchrun ranks [128; 256 for ImageNet]."
WORKERS_HELP = "DataLoader workers for file-backed data sets."

# Ranges shared by several options (each field's own range is declared with it; isl_cli.bounds)
SEED_BOUNDS = Bounds(0, 2**32 - 1, integer=True)
BATCH_BOUNDS = Bounds(1, 2**20, integer=True)
WORKERS_BOUNDS = Bounds(0, 256, integer=True)
EPOCHS_BOUNDS = Bounds(1, 10**6, integer=True)
STEPS_BOUNDS = Bounds(0, 10**9, integer=True)  # a floor in steps: 0 = none
PASSES_BOUNDS = Bounds(0, 10**6, integer=True)  # empty passes before a stop: 0 = never
DRAWS_BOUNDS = Bounds(1, 2**24, integer=True)  # and the (batch, K) draws must fit in memory: checks.draws_fit
EVAL_K_BOUNDS = Bounds(1, 10**6, integer=True)
ROUNDS_BOUNDS = Bounds(1, 1000, integer=True)
TEMPERATURE_BOUNDS = Bounds(1e-4, 100)
FRACTION_BELOW_ONE = Bounds(0, 1, high_open=True)  # [0, 1)

#: Options of `isl run` that set a field of several stages at once (one value for every stage), with their help.
RUN_SHARED_HELP = {
    "--batch-size": "Global batch size of every stage, summed over torchrun ranks [128; 256 for ImageNet].",
    "--num-draws": "Negative candidates K drawn per image, GAN and mining [4096].",
    "--workers": "DataLoader workers of every stage, for file-backed data sets.",
    "--seed": "Seed of every stage; the same seed on CPU gives the same result.",
}


@dataclass(frozen=True)
class CliOption:
    """How one config field is typed on the command line.

    `flag` and `help` are the stage command's; `run_flag` and `run_help` are `isl run`'s (where fields of several
    stages may share a flag listed in RUN_SHARED_HELP). An option is None unless typed (the preset's value stays),
    except with a `cli_default`, which the command always passes (`--seed 0`). A bool field is a single flag that sets
    the opposite of the field's default (`--channels-last`, `--no-sync-bn`).
    """

    flag: str
    help: str
    run_flag: str
    run_help: str
    cli_default: Any = None
    bounds: Bounds | None = None  # the values a numeric option accepts (every config's validate checks them)


def option(default: Any, flag: str, help: str, *, run_flag: str | None = None, run_help: str | None = None,
           cli_default: Any = None, bounds: Bounds | None = None) -> Any:
    """A config field that is an option: of its stage's command (`flag`) and of `isl run` (`run_flag`, else `flag`).

    `bounds`: the range of a numeric option, checked by `check_bounds` in the config's `validate`.
    """
    run_flag = run_flag or flag
    run_help = RUN_SHARED_HELP.get(run_flag) or run_help or help
    return field(default=default, metadata={"cli": CliOption(flag, help, run_flag, run_help, cli_default, bounds)})


def derived(default: Any, why: str) -> Any:
    """A config field that no option sets: `why` says where its value comes from."""
    return field(default=default, metadata={"derived": why})


def cli_options(cls: type) -> dict[str, CliOption]:
    """Field name -> its option, for every option field of a config class (derived fields left out)."""
    return {f.name: f.metadata["cli"] for f in fields(cls) if "cli" in f.metadata}


def derived_fields(cls: type) -> frozenset[str]:
    """Names of a config class's fields that are not options."""
    return frozenset(f.name for f in fields(cls) if "derived" in f.metadata)


def check_bounds(cfg: Any) -> None:
    """Refuse any option field of a config whose value lies outside its declared range (one line, its flag)."""
    for name, opt in cli_options(type(cfg)).items():
        if opt.bounds is not None:
            opt.bounds.check(opt.flag, getattr(cfg, name))


def field_bounds(cls: type, name: str) -> Bounds:
    """The range declared with one config field's option (for a command that takes the same value by hand)."""
    bounds = cli_options(cls)[name].bounds
    if bounds is None:
        raise TypeError(f"{cls.__name__}.{name} declares no range")
    return bounds


def run_flags_named(text: str, cls: type) -> str:
    """`text` (an error line naming a stage's options) with each option named as `isl run` names it (--gan-lr)."""
    for opt in cli_options(cls).values():
        if opt.run_flag != opt.flag:
            text = re.sub(rf"(?<![\w-]){re.escape(opt.flag)}(?![\w-])", opt.run_flag, text)
    return text


@dataclass(frozen=True)
class FeaturesConfig:
    """train-features: backbone, memory bank, ISL loss, SGD, LR plateau schedule."""

    arch: str = option("resnet18", "--arch", "resnet18, resnet50 or alexnet \\[default: resnet18].")
    variant: str = option(
        "cifar", "--variant",
        "cifar (32x32 backbones) or imagenet; picked from the data unless given. File-backed data and images over 64 "
        "px take the ImageNet settings (T 0.07, 100 epochs, batch 256, weight decay 1e-4, kNN every 2 epochs with k "
        "1), and the log's first line says so; --variant cifar keeps the 32x32 ones.",
        run_help="cifar or imagenet backbones and settings; picked from the data unless given (file-backed or over "
                 "64 px: ImageNet settings).")
    width: float = option(1.0, "--width", "Channel multiplier of the ResNets (1.0 = paper; 0.25 suits a CPU).",
                          bounds=Bounds(0, 1024, low_open=True))
    low_dim: int = option(128, "--low-dim", "Feature size D \\[default: 128].", bounds=Bounds(1, 65536, integer=True))
    image_size: int = derived(32, "the network input side: the data set's image size, not an option")
    epochs: int = option(200, "--epochs", "Epochs of this stage \\[paper: 200; 100 for ImageNet].",
                         run_help="train-features epochs per round \\[paper: 200; 100 for ImageNet].",
                         bounds=EPOCHS_BOUNDS)
    batch_size: int = option(128, "--batch-size",
                             "Global batch size, summed over torchrun ranks \\[paper: 128; 256 for ImageNet].",
                             bounds=BATCH_BOUNDS)
    lr: float = option(0.03, "--lr", "SGD learning rate \\[paper: 0.03].", bounds=Bounds(0, 10, low_open=True))
    momentum: float = option(0.9, "--momentum", "SGD momentum [0.9].", bounds=FRACTION_BELOW_ONE)
    weight_decay: float = option(5e-4, "--weight-decay", "SGD weight decay [5e-4; 1e-4 for ImageNet].",
                                 bounds=Bounds(0, 1))
    temperature: float = option(0.1, "--temperature", "Softmax temperature T [0.1; 0.07 for ImageNet].",
                                bounds=TEMPERATURE_BOUNDS)
    bank_momentum: float = option(0.5, "--bank-momentum", "Memory bank momentum m [0.5].", bounds=FRACTION_BELOW_ONE)
    hp_weight: float = option(0.5, "--hp-weight", "Weight of the hard-positive KL term [0.5].", bounds=Bounds(0, 100))
    eval_every: int = option(5, "--eval-every",
                             "kNN evaluation (and LR plateau step) every N epochs [5; 2 for ImageNet].",
                             bounds=EPOCHS_BOUNDS)
    eval_k: int = option(200, "--eval-k", "k of the kNN during training [200; 1 for ImageNet].", bounds=EVAL_K_BOUNDS)
    lr_factor: float = option(0.8, "--lr-factor", "LR plateau cut factor [0.8].",
                              bounds=Bounds(0, 1, low_open=True, high_open=True))
    lr_patience: int = option(1, "--lr-patience", "Evaluations without improvement before the LR is cut [1].",
                              bounds=Bounds(0, 10**6, integer=True))
    val_split: float = option(
        0.0, "--val-split",
        "The kNN that drives the LR scheduler queries this fraction of the TRAINING images instead of the test set. "
        "The held-out images are still trained on (no labels are used in training); only their labels leave the "
        "kNN's keys. Default 0: like the paper's code, the scheduler watches test-set kNN (tuning on the test set; "
        "use this option for an honest protocol).",
        run_help="Share of the training images whose kNN drives the LR scheduler (default: the test set, as the "
                 "paper's code). They are still trained on; only their labels leave the kNN's keys.",
        bounds=FRACTION_BELOW_ONE)
    seed: int = option(0, "--seed", SEED_HELP, cli_default=0, bounds=SEED_BOUNDS)
    num_workers: int = option(4, "--workers", "DataLoader workers for file-backed data sets (ImageNet).",
                              bounds=WORKERS_BOUNDS)
    # autocast of every backbone forward (bank and loss stay fp32)
    amp: str = option("none", "--amp", AMP_HELP + " \\[paper preset: none; quick: auto].",
                      run_help=AMP_HELP + " Applies to every stage's backbone \\[paper preset: none; quick: auto].")
    channels_last: bool = option(False, "--channels-last", CHANNELS_LAST_HELP + " \\[paper preset: off; quick: on].",
                                 run_help=CHANNELS_LAST_HELP + " Every stage \\[paper preset: off; quick: on].")
    sync_bn: bool = option(True, "--no-sync-bn",  # data parallel: batch norm over the global batch
                           "Under torchrun: batch norm per rank instead of over the global batch.")

    def validate(self) -> "FeaturesConfig":
        check_bounds(self)
        _positive(self, "image_size")
        if self.amp not in ("none", "bf16", "fp16", "auto"):
            raise IslError(f"--amp must be none, bf16, fp16 or auto, got {self.amp!r}")
        if self.variant not in ("cifar", "imagenet"):
            raise IslError(f"--variant must be cifar or imagenet, got {self.variant!r}")
        return self


@dataclass(frozen=True)
class GanConfig:
    """train-gan: triplet GAN on frozen features."""

    batch_size: int = option(128, "--batch-size", BATCH_HELP, bounds=BATCH_BOUNDS)
    lr: float = option(1e-4, "--lr", "Adam learning rate of both networks [1e-4].", run_flag="--gan-lr",
                       run_help="Adam learning rate of the GAN [1e-4].", bounds=Bounds(0, 1, low_open=True))
    num_draws: int = option(4096, "--num-draws", "Negative candidates K drawn per image [4096].", bounds=DRAWS_BOUNDS)
    max_epochs: int = option(200, "--max-epochs", "Hard cap on epochs whatever the rule says [200].",
                             run_flag="--gan-max-epochs", run_help="Hard cap on GAN epochs per round [200].",
                             bounds=EPOCHS_BOUNDS)
    min_steps: int = option(
        0, "--min-steps",
        "Round 0's floor of the paper's rule in generator steps rather than epochs: the rule never stops round 0 "
        "before 10 epochs, which on CIFAR-10 (50,000 images, batch 128) are 3,900 steps but on 5,000 images only "
        "390, too few for the proxies to reach the bank. 0: the reference (10 epochs) \\[paper: 0; cpu: 3900].",
        run_flag="--gan-min-steps",
        run_help="Round 0's GAN trains at least this many generator steps (0: the reference's 10 epochs) "
                 "\\[paper: 0; cpu: 3900].", bounds=STEPS_BOUNDS)
    epochs: int | None = option(None, "--epochs", "Stop after exactly N epochs instead of the paper's rule.",
                                run_flag="--gan-epochs",
                                run_help="Fixed GAN epochs per round (instead of the paper's rule).",
                                bounds=EPOCHS_BOUNDS)
    seed: int = option(0, "--seed", SEED_HELP, cli_default=0, bounds=SEED_BOUNDS)
    num_workers: int = option(4, "--workers", WORKERS_HELP, bounds=WORKERS_BOUNDS)

    def validate(self) -> "GanConfig":
        check_bounds(self)
        return self


@dataclass(frozen=True)
class MineConfig:
    """mine-neighbors: GAN proxies turned into new neighbour pairs."""

    batch_size: int = option(128, "--batch-size", BATCH_HELP, bounds=BATCH_BOUNDS)
    num_draws: int = option(4096, "--num-draws", "Negative candidates K per image [4096].", bounds=DRAWS_BOUNDS)
    tau: float = option(0.5, "--tau", "Score threshold [0.5; 0.3 for ImageNet].",
                        run_help="Mining score threshold [0.5; 0.3 for ImageNet].", bounds=FRACTION_BELOW_ONE)
    base_radius: float = option(0.6, "--base-radius", "R of the radius r = R + (1-s)(1-R) [0.6; 0.3 for ImageNet].",
                                run_help="Mining radius R [0.6; 0.3 for ImageNet].", bounds=Bounds(0, 1))
    top_k: int = option(10, "--top-k", "Bank rows nearest each proxy that may join [10].",
                        bounds=Bounds(1, 10**6, integer=True))
    per_round: float = option(0.5, "--per-round", "Quota: (round+1) x this x N neighbour entries [0.5].",
                              run_help="Mining quota: (round+1) x this x N entries [0.5].",
                              bounds=Bounds(0, 10**6, low_open=True))
    max_passes: int = option(200, "--max-passes", "Cap on passes over the data [200].",
                             run_help="Cap on mining passes per round [200].", bounds=EPOCHS_BOUNDS)
    miner: str = option(
        "gan", "--miner",
        "gan: the paper's miner (GAN proxies, tau, radius). similarity: the plain-similarity rival in the style of "
        "AND, no GAN needed: in one pass, the most similar pairs i < j of the bank that are not yet neighbours join "
        "the graph, as many as the round's quota needs (same quota, same symmetric growth). \\[default: gan].",
        run_help="gan (the paper's), similarity (the most similar non-neighbour pairs of the bank, AND-style; no "
                 "GAN stage: see `isl mine-neighbors --help`) or none (the control: no GAN, no mining; later rounds "
                 "continue instance discrimination for the same epochs).")
    stop_after_empty: int = option(
        0, "--stop-after-empty",
        "Stop a round's mining after N passes in a row that add no pair, with one line saying which test rejected "
        "the proposals and what to try. 0: never (the reference: passes repeat up to --max-passes) "
        "\\[paper preset: 0; quick and cpu: 5].",
        run_help="Stop mining after N passes in a row that add nothing (0: never, the reference) "
                 "\\[paper: 0; quick and cpu: 5].", bounds=PASSES_BOUNDS)
    quota_check: str = option(
        "pass", "--quota-check",
        "When to compare the neighbour count with the quota: after each pass (the method); also after each batch "
        "(batch: stops within a pass, so the quota is not overshot by a pass's worth; the first batch of a round "
        "always runs); or exact: as batch, and a batch adds only the proposals, in their order, that the quota "
        "still needs, so that every miner adds the same number of pairs \\[default: pass; quick: batch; cpu: exact].",
        run_help="pass (the method), batch or exact: see `isl mine-neighbors --help`.")
    seed: int = option(0, "--seed", SEED_HELP, cli_default=0, bounds=SEED_BOUNDS)
    num_workers: int = option(4, "--workers", WORKERS_HELP, bounds=WORKERS_BOUNDS)

    def validate(self) -> "MineConfig":
        check_bounds(self)
        if self.miner not in MINERS:
            raise IslError(f"--miner must be {', '.join(MINERS[:-1])} or {MINERS[-1]}, got {self.miner!r}")
        if self.quota_check not in ("pass", "batch", "exact"):
            raise IslError(f"--quota-check must be pass, batch or exact, got {self.quota_check!r}")
        return self


@dataclass(frozen=True)
class RunConfig:
    """The whole schedule: rounds of train-features, train-gan, mine-neighbors."""

    dataset: str = "shapes"
    preset: str = "paper"
    rounds: int = 4
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    mine: MineConfig = field(default_factory=MineConfig)
    eval_ks: tuple[int, ...] = (200,)

    def validate(self) -> "RunConfig":
        ROUNDS_BOUNDS.check("--rounds", self.rounds)
        if not self.eval_ks:
            raise IslError("--k must be given at least once")
        EVAL_K_BOUNDS.check_all("--k", self.eval_ks)
        self.features.validate()
        self.gan.validate()
        self.mine.validate()
        return self


def paper_features(imagenet: bool) -> FeaturesConfig:
    """The paper's feature-learning settings for 32x32 data or ImageNet."""
    if imagenet:
        return FeaturesConfig(
            variant="imagenet", image_size=224, epochs=100, batch_size=256, weight_decay=1e-4,
            temperature=0.07, eval_every=2, eval_k=1,
        )
    return FeaturesConfig()


def paper_gan(imagenet: bool) -> GanConfig:
    """The paper's GAN settings: the reference's one loader gives the GAN its batch (256 on ImageNet)."""
    return GanConfig(batch_size=256) if imagenet else GanConfig()


def paper_mine(imagenet: bool) -> MineConfig:
    """The paper's mining settings (tau, R, and the one loader's batch) for 32x32 data or ImageNet."""
    return MineConfig(tau=0.3, base_radius=0.3, batch_size=256) if imagenet else MineConfig()


PRESET_ROUNDS = {"paper": 4, "quick": 2, "cpu": 4}


def preset_configs(preset: str, imagenet: bool) -> tuple[FeaturesConfig, GanConfig, MineConfig]:
    """Configs of a named preset: `paper` (the reference's), `quick` (a CPU in minutes) or `cpu` (the paper's
    schedule at width 0.25 on the fast path: 5,000 32x32 images in 73 minutes on 2 cores here, measured)."""
    if preset not in PRESETS:
        raise IslError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    features, gan, mine = paper_features(imagenet), paper_gan(imagenet), paper_mine(imagenet)
    if preset == "quick":
        # sized so that `isl run --preset quick` shows learning on shapes in under 5 minutes on 2 CPU cores:
        # the fast path, width 0.25, 2 rounds of 16 epochs; a GAN of 8 epochs at 3x the paper's Adam rate (at the
        # paper's rate 8 epochs of 5,000 images propose no pair); mining capped at 3 passes, quota per batch
        features = replace(features, width=0.25, epochs=16, eval_every=4, num_workers=2,
                           amp="auto", channels_last=True)  # the fast path: bf16 where native, channels-last
        gan = replace(gan, epochs=8, lr=3e-4, num_draws=1024)
        mine = replace(mine, num_draws=1024, max_passes=3, quota_check="batch", stop_after_empty=5)
    if preset == "cpu":
        # the paper's schedule (4 rounds of 200 epochs, the GAN's rule, the mining quota) sized for 2 CPU cores: width
        # 0.25 on the fast path; round 0's GAN trains the paper's CIFAR-10 step count; mining adds exactly the quota
        # and stops after 5 empty passes instead of spinning to the cap
        features = replace(features, width=0.25, num_workers=2, amp="auto", channels_last=True)
        gan = replace(gan, min_steps=3900)  # round 0's 10 epochs of CIFAR-10, in steps (see --gan-min-steps)
        mine = replace(mine, stop_after_empty=5, quota_check="exact")  # every miner adds the quota's pairs
    return features, gan, mine


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a config dataclass (nested ones included)."""
    return asdict(config)


def from_dict(cls: type, data: dict[str, Any]):
    """Build a config from a dict, ignoring unknown keys (older/newer files)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def override(config: Any, **changes: Any):
    """`replace` that ignores None values (options the user did not give)."""
    given = {k: v for k, v in changes.items() if v is not None}
    return replace(config, **given) if given else config


def given_fields(**changes: Any) -> frozenset[str]:
    """Names of the options the user gave (the CLI passes None for the others)."""
    return frozenset(k for k, v in changes.items() if v is not None)


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is None or not math.isfinite(value) or value <= 0:  # NaN: `nan <= 0` is False
            raise IslError(f"--{name.replace('_', '-')} must be positive and finite, got {value}")


