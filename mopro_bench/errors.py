"""The one error type a user can cause.

Anything a user can get wrong (missing file, wrong layout, unknown checkpoint keys, bad option) raises
:class:`BenchError`. The CLI prints it as a single line -- what is wrong and how to fix it -- and exits with
code 2. Every other exception is a bug: it keeps its traceback and exits 1.

A BenchError raised in another process comes back in one of two shapes, both handled here:

- pickled (``multiprocessing`` pools): :meth:`BenchError.__reduce__` rebuilds it with its message *and* fix;
- as traceback text (a DataLoader worker: torch re-raises ``BenchError("Caught BenchError in DataLoader worker
  process 0. Original Traceback ...")``; ``torch.multiprocessing.spawn``, as used by detectron2's ``launch``, raises
  ``ProcessRaisedException`` with the child's traceback): the constructor, and :func:`unwrap_error` for other
  exception types, read the original one-line message back from the traceback's last ``BenchError:`` line.
"""

from __future__ import annotations

import re

FIX_SEP = " -- fix: "
# the last line of a formatted traceback of a BenchError: "mopro_bench.errors.BenchError: <message> -- fix: <fix>"
_TRACEBACK_LINE = re.compile(r"^(?:[\w.]+\.)?BenchError: (.+)$")


def _from_traceback_text(text: str) -> tuple[str, str | None] | None:
    """``(message, fix)`` of the BenchError whose formatted traceback ``text`` holds, or None."""
    if "Traceback (most recent call last)" not in text:
        return None
    for line in reversed(text.splitlines()):
        m = _TRACEBACK_LINE.match(line.strip())
        if m:
            message, _, fix = m.group(1).partition(FIX_SEP)
            return message, (fix or None)
    return None


class BenchError(Exception):
    """A user-facing error. ``str(err)`` is one line that names the problem and the fix."""

    exit_code = 2

    def __init__(self, message: str, fix: str | None = None):
        if fix is None:  # re-raised by torch from a worker's traceback text: keep the original line only
            found = _from_traceback_text(str(message))
            if found:
                message, fix = found
        self.message = " ".join(str(message).split())
        self.fix = " ".join(fix.split()) if fix else None
        super().__init__(self.line())

    def __reduce__(self):
        # Exception pickles ``self.args`` (the whole line) and would rebuild it with the fix folded into the message
        return (type(self), (self.message, self.fix))

    def line(self) -> str:
        return f"{self.message}{FIX_SEP}{self.fix}" if self.fix else self.message


def unwrap_error(exc: BaseException) -> BenchError | None:
    """The BenchError behind ``exc``: itself, or one whose traceback text another process sent back (see above)."""
    if isinstance(exc, BenchError):
        return exc
    found = _from_traceback_text(str(exc))
    return BenchError(*found) if found else None
