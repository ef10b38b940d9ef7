"""One epoch of each stage, stopping rules and the round loop."""
