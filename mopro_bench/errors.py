"""The one error type a user can cause.

Anything a user can get wrong (missing file, wrong layout, unknown checkpoint keys, bad option) raises
:class:`BenchError`. The CLI prints it as a single line -- what is wrong and how to fix it -- and exits with
code 2. Every other exception is a bug: it keeps its traceback and exits 1.
"""

from __future__ import annotations


class BenchError(Exception):
    """A user-facing error. ``str(err)`` is one line that names the problem and the fix."""

    exit_code = 2

    def __init__(self, message: str, fix: str | None = None):
        self.message = " ".join(str(message).split())
        self.fix = " ".join(fix.split()) if fix else None
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.message} -- fix: {self.fix}" if self.fix else self.message
