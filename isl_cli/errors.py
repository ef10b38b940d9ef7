"""The one exception type users see as a one-line message and exit code 2."""


class IslError(Exception):
    """A user-facing error: bad input, a missing or mismatched artifact, no network.

    The CLI prints `str(error)` on one line of stderr and exits with code 2
    (a traceback only with `--debug` or `ISL_DEBUG=1`).
    """


class StageInterrupted(Exception):
    """Ctrl-C stopped a stage after a clean checkpoint; the CLI exits 130."""

    def __init__(self, message: str, resume_command: str | None = None):
        super().__init__(message)
        self.resume_command = resume_command
