"""Precision of every backbone forward: `--amp none|bf16|fp16|auto` and `--channels-last`.

One `Precision` is resolved per stage from the options and the device, and
every backbone pass goes through `Precision.forward`: channels-last input when
asked, autocast on the device type, and the output cast back to float32 right
after the forward, so the bank, the softmax over N, the losses, the GAN and the
kNN always run in fp32. With `--amp none` and no channels-last the forward is
the plain `model(images)`, bit for bit.

`auto` picks bf16 where the hardware does it natively (a CPU with AVX512-BF16
or AMX, a CUDA device that supports bf16) and fp32 everywhere else. fp16 is
CUDA only: a CPU without AVX512-FP16 emulates it (about 10x slower than fp32
on the development machine's EPYC) and it would need a gradient scaler there.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from isl_cli.errors import IslError

AMP_CHOICES = ("none", "bf16", "fp16", "auto")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of x86 CPUs with native bf16 arithmetic
ARM_BF16_FLAG = "bf16"  # the Features line of an aarch64 CPU with BF16 instructions
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """How the backbone runs: autocast dtype (or fp32), memory format, and why."""

    amp: str = "none"  # none | bf16 | fp16, never auto (resolved)
    channels_last: bool = False
    device_type: str = "cpu"
    reason: str = "--amp none"

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for fp32."""
        return _DTYPES.get(self.amp)

    def describe(self) -> str:
        """The stage's first log line, e.g. `precision: bf16 autocast, channels-last (auto: ...)`."""
        what = "fp32" if self.amp == "none" else f"{self.amp} autocast"
        if self.channels_last:
            what += ", channels-last"
        return f"precision: {what} ({self.reason})"

    def autocast(self):
        """Autocast on the device type for the backbone forward; a no-op in fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model in the memory format its inputs will have (in place; returns it)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in channels-last when asked, else unchanged."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def forward(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """model(images) under this precision: (B, D) float32."""
        with self.autocast():
            features = model(self.inputs(images))  # (B, D), bf16/fp16 under autocast
        return features.float()  # the same tensor when already fp32


FP32 = Precision()


def resolve(amp: str, channels_last: bool, device: torch.device) -> Precision:
    """The precision a stage runs at; `auto` decided from the hardware; bad choices refused in one line."""
    amp = (amp or "none").lower()
    if amp not in AMP_CHOICES:
        raise IslError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    kind = device.type
    if amp == "fp16" and kind != "cuda":
        raise IslError(f"--amp fp16 needs a CUDA device: on {kind} fp16 is emulated and slower than fp32; "
                       "use --amp bf16 or auto")
    native, why = native_bf16(device)
    if amp == "auto":
        return Precision("bf16" if native else "none", channels_last, kind, f"auto: {why}")
    reason = f"--amp {amp}"
    if amp == "bf16" and not native:
        reason += f"; {why}, so expect it slower than fp32"
    return Precision(amp, channels_last, kind, reason)


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether `device` computes bf16 natively, and a few words saying why (for the log)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return True, f"this GPU supports bf16 ({name})"
        return False, f"this GPU has no bf16 ({name})"
    if device.type == "cpu":
        feature = cpu_bf16_feature()
        if feature is not None:
            return True, f"this CPU has native bf16 ({feature})"
        return False, "this CPU has no native bf16"
    return False, f"no native bf16 path on {device.type}"


def cpu_bf16_feature() -> str | None:
    """The CPU feature that gives native bf16 (`amx_bf16`, `avx512_bf16`, `bf16` on ARM), or None."""
    probes = (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    for flag, probe in probes:  # torch's own CPU capability checks (cpuinfo), where this torch has them
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return flag
        except RuntimeError:
            pass
    flags = _cpuinfo_flags()
    for flag in CPU_BF16_FLAGS:
        if flag in flags:
            return flag
    return ARM_BF16_FLAG if ARM_BF16_FLAG in flags and torch.backends.mkldnn.is_available() else None


def _cpuinfo_flags() -> set[str]:
    """The flags (x86) or Features (ARM) of the first CPU in /proc/cpuinfo; empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()
