"""The one exception type the CLI turns into a one-line message and exit code 2."""


class PoemctlError(Exception):
    """A problem with the user's input or files, explained in one line."""
