"""The project's error type for bad input: every message names the frame, file or field at fault."""


class DataError(ValueError):
    """Input data (a dataset, a label file, a recipe value) is missing or malformed.

    The message says which sample token / file / field is wrong and what to do about it.
    """
