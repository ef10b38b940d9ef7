"""`python -m isl_cli` runs the `isl` command (also under torchrun)."""

from isl_cli.cli.app import main

if __name__ == "__main__":
    main()
