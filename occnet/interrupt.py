"""Ctrl-C that is neither lost nor misreported.

Python turns SIGINT into KeyboardInterrupt at the next bytecode of the main thread, wherever that is, and two
places there mishandle it:
- inside a finalizer (`__del__`, a weakref callback, which the garbage collector may run at any allocation; an
  import's module-lock callback is one) the exception is printed as "ignored", with a traceback, and the program
  goes on (`autolabel run` was seen still training 40 s after a Ctrl-C, once in about 60 interrupted runs: what
  an interrupt lost this way does);
- inside code that `exec` or `eval` runs from a string (every dataclass and namedtuple made at import), CPython
  marks the interrupt as unhandled even when a caller catches it, and a `python -m` process so marked kills
  itself with SIGINT when it exits: status -2 instead of the 130 that the CLI returns.

Within `remembered` (the CLI's command) the SIGINT handler also remembers the interrupt; `check` raises it again
at safe points (every training step, every labelled or fused frame, between stages), so a lost one comes back
within a step, and the "ignored" report of it is dropped (`sys.unraisablehook`), so the CLI's one line is all the
user sees; `handled`, where the CLI reports the interrupt, forgets it and clears CPython's mark. Outside (the
library used from Python) nothing changes: `check` never raises."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

_pending = False


def _on_sigint(signum, frame) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


@contextmanager
def remembered() -> Iterator[None]:
    """SIGINTs within are remembered; the previous handler is back afterwards. Nothing changes where SIGINT is
    ignored (a job started in the background by a script, or under nohup-like launchers, must stay deaf to it)
    or off the main thread (only the main thread can set a handler)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        yield
        return
    previous, report = signal.signal(signal.SIGINT, _on_sigint), sys.unraisablehook

    def unraisable(info) -> None:
        # our KeyboardInterrupt raised inside a finalizer: remembered, and raised again at the next check; the
        # "Exception ignored" traceback Python would print for it says nothing the CLI's one line does not
        if not (_pending and isinstance(info.exc_value, KeyboardInterrupt)):
            report(info)

    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = report


def pending() -> bool:
    """Whether a SIGINT came that was not handled yet (an error that follows it is one it caused)."""
    return _pending


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT came and was not handled (a safe point of a long loop)."""
    if _pending:
        raise KeyboardInterrupt


def handled() -> None:
    """The interrupt was reported: forget it, and clear CPython's "went unhandled" mark, which every `exec` of a
    string resets when it starts (Python/pythonrun.c, run_eval_code_obj); nothing else resets it."""
    global _pending
    _pending = False
    exec("pass")
