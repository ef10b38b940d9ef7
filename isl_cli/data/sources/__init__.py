"""Data set sources: download or convert official data into stored splits.

Entry points: `prepare_dataset` (used by `isl fetch-data` and `isl run`),
`fetch_dataset` (same, returning a summary), `needs_network`, and
`describe_dataset`. Modules: registry (names, URLs, checksums), download
(resumable, verified), cifar, svhn, idx (MNIST family), imagefolder,
imagenet, shapes (synthetic), convert (resizing), fetch (the engine).
Submodules are imported on use, so importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["prepare_dataset", "fetch_dataset", "needs_network", "describe_dataset", "FetchOutcome"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from isl_cli.data.sources import fetch  # noqa: PLC0415

        return getattr(fetch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
