"""The project's error types: every message names the frame, file or field at fault.

Exit statuses of the CLI (README, Commands): 0 done, 2 bad input (`DataError`), 3 waiting for
annotators (`AwaitingAnnotations`: nothing is wrong, the run resumes once the labels are delivered),
130 interrupted (Ctrl-C; rerun to resume).
"""

import re

EXIT_DATA_ERROR = 2
EXIT_AWAITING_ANNOTATIONS = 3
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT (128 + 2)


class DataError(ValueError):
    """Input data (a dataset, a label file, a recipe value) is missing or malformed.

    The message says which sample token / file / field is wrong and what to do about it.
    """


class AwaitingAnnotations(Exception):
    """A run stopped because the annotators' labels for a round are not delivered yet. Not a DataError:
    scripts looping over `autolabel run` must tell "come back later" (exit 3) from "fix something" (exit 2)."""


def one_line(exc: BaseException) -> str:
    """The message of `exc` on one line. An error raised in a DataLoader worker comes back with the
    worker's traceback folded into its message ("Caught DataError in DataLoader worker process 0.
    Original Traceback ..."); only its last line, the original message, names the problem."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = re.sub(r"^[\w.]+(Error|Exception): ", "", last)
    return " ".join(line.strip() for line in text.splitlines())
