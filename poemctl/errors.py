"""The exceptions the CLI turns into one line: PoemctlError (exit code 2) and TrainingStopped (exit code 1)."""


class PoemctlError(Exception):
    """A problem with the user's input or files, explained in one line."""


class TrainingStopped(Exception):
    """A run stopped early for a reason that is not bad input (a NaN loss, Ctrl-C): exit 1, not 2."""
