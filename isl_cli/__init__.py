"""isl: Instance Similarity Learning (ICCV 2021) as a command-line toolkit."""

__version__ = "0.1.0"
