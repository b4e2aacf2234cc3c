"""User-facing errors: the CLI prints them as one line and exits with status 2, without a traceback."""


class UserError(Exception):
    """Bad input from the user (a study file, a data path, a checkpoint). The message names the file, the key
    or the path, and the fix."""


def first_line(error, limit=200):
    """An error as a user reads it, in one line. An exception: `TypeName: the first line of its message`. A
    traceback's text (Tune's error files, a Ray task's error): its exception line, the last one that is not
    indented, e.g. `ValueError: x`."""
    if isinstance(error, BaseException):
        lines = str(error).strip().splitlines()
        return f"{type(error).__name__}: {lines[0] if lines else ''}"[:limit]
    lines = [ln.strip() for ln in str(error).splitlines()
             if ln.strip() and not ln.startswith((" ", "\t", "Failure #"))]
    return (lines[-1] if lines else str(error).strip())[:limit]
