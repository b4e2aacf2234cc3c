"""User-facing errors: the CLI prints them as one line and exits with status 2, without a traceback."""


class UserError(Exception):
    """Bad input from the user (a study file, a data path, a checkpoint). The message names the file, the key
    or the path, and the fix."""
