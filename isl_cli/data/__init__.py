"""Data sets: sources, stored splits, batch augmentation."""
