"""The `isl` command line: one thin module per command."""
