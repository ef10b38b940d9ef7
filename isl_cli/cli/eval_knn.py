"""`isl eval-knn` (placeholder until its issue lands)."""

from isl_cli.cli.common import not_implemented


def eval_knn() -> None:
    """Not implemented yet: exits 2."""
    not_implemented("eval-knn")
