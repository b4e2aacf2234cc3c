"""Where kdsearch's progress lines go: standard error, one line each, flushed (a user watches them live, and
Ray's worker output interleaves with them)."""
import sys


def log_stderr(msg):
    print(msg, file=sys.stderr, flush=True)
