"""`isl fetch-data` (placeholder)."""

from isl_cli.cli.common import not_implemented


def fetch_data() -> None:
    """Not implemented yet: exits 2."""
    not_implemented("fetch-data")
