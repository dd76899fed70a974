"""occnet.interrupt: a Ctrl-C that a finalizer swallows comes back at the next check, and one raised inside code
run by `exec` of a string leaves the CLI's exit status alone (CPython otherwise kills the process with SIGINT
at exit). Each case runs in its own interpreter, which the signal is sent to, as a module (`python -m`, as the
CLI runs: only that path of CPython turns the mark into the exit status)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def run(code: str, folder: Path) -> subprocess.CompletedProcess:
    (folder / "case.py").write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), *sys.path])}
    return subprocess.run(
        [sys.executable, "-m", "case"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    """The case's interpreter starts with SIGINT at its default, as in a terminal: a test run started in the
    background by a script ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_ctrl_c_lost_in_a_finalizer_comes_back_at_the_next_check(tmp_path):
    p = run(
        """
        import os, signal, time
        from occnet import interrupt

        class Finalized:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the KeyboardInterrupt is raised here, where Python prints it as ignored

        with interrupt.remembered():
            Finalized()
            print("went on", flush=True)
            try:
                interrupt.check()
            except KeyboardInterrupt:
                print("came back")
        """,
        tmp_path,
    )
    # Python lost it and went on, printing it as "ignored" with a traceback before remembered() dropped that
    # report (a CLI run interrupted while an import's module-lock callback ran printed it beside its one line)
    assert p.stderr == "", p.stderr
    assert p.stdout.splitlines() == ["went on", "came back"]  # ... and check() raised it again


@pytest.mark.parametrize("handled", [True, False])
def test_a_ctrl_c_inside_exec_keeps_the_exit_status(handled, tmp_path):
    p = run(
        f"""
        import sys
        from occnet import interrupt

        with interrupt.remembered():
            try:
                exec("import os, signal, time\\nos.kill(os.getpid(), signal.SIGINT)\\ntime.sleep(5)")
            except KeyboardInterrupt:
                if {handled}:
                    interrupt.handled()
        sys.exit(130)
        """,
        tmp_path,
    )
    # without handled(), CPython remembers the interrupt as unhandled and exits by SIGINT (status -2)
    assert p.returncode == (130 if handled else -signal.SIGINT), p.stderr


def test_check_raises_only_after_a_sigint_within_remembered(tmp_path):
    p = run(
        """
        import os, signal
        from occnet import interrupt

        interrupt.check()  # nothing pending
        with interrupt.remembered():
            interrupt.check()
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                pass
            print(interrupt.pending())
            interrupt.handled()
            interrupt.check()
        print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)  # Python's, put back
        """,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["True", "True"]


def test_an_ignored_sigint_stays_ignored(tmp_path):
    """A command started with SIGINT ignored (in the background by a script) must not start answering it."""
    p = run(
        """
        import os, signal
        from occnet import interrupt

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with interrupt.remembered():
            os.kill(os.getpid(), signal.SIGINT)
            interrupt.check()
            print(interrupt.pending(), signal.getsignal(signal.SIGINT) == signal.SIG_IGN)
        """,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "True"]
