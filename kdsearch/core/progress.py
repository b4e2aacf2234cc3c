"""How far along long work is: the data's decode, each baseline's epochs, the logit table, the confirmation.

On a terminal (standard error is a TTY and the lines go there) a tqdm bar with elapsed and remaining time; anywhere
else (CI, a log file, Ray's workers) the plain lines, one per step, as before. Ray Tune's own status table stays
for the search."""
import contextlib
import sys

from kdsearch.core.log import log_stderr


class Progress:
    """Steps of one piece of work: `step(line, status)` moves the bar by one and shows `status` beside it, or
    logs `line` where there is no terminal."""

    def __init__(self, total, desc, log, unit):
        self.log, self.bar = log, None
        if log is log_stderr and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} "
                                       "[{elapsed}<{remaining}] {postfix}")

    def step(self, line, status=""):
        if self.bar is None:
            if line:
                self.log(line)
            return
        self.bar.set_postfix_str(status, refresh=False)
        self.bar.update(1)

    def note(self, line):
        """A line that is not a step (written above the bar on a terminal)."""
        if self.bar is None:
            self.log(line)
        else:
            self.bar.write(line, file=sys.stderr)


@contextlib.contextmanager
def progress(total, desc, log=log_stderr, unit="epochs"):
    """A Progress of `total` steps named `desc`, closed (its bar finished) when the block ends."""
    p = Progress(total, desc, log, unit)
    try:
        yield p
    finally:
        if p.bar is not None:
            p.bar.close()
