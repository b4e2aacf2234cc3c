"""Progress on a terminal: bars with elapsed and remaining time when standard error is a TTY (a real
pseudo-terminal here), the plain lines otherwise."""
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios

from conftest import TINY_STUDY

from kdsearch.core.progress import progress


def test_without_a_terminal_each_step_is_its_line():
    lines = []
    with progress(3, "student_ce", lines.append) as bar:
        for e in range(3):
            bar.step(f"student_ce: epoch {e + 1}/3", "val 10%")
        bar.note("a note")
    assert lines == ["student_ce: epoch 1/3", "student_ce: epoch 2/3", "student_ce: epoch 3/3", "a note"]


def test_on_a_terminal_the_long_work_shows_bars_with_elapsed_and_remaining_time(tiny_archive, tmp_path):
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY_STUDY)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal of 160 columns
    proc = subprocess.Popen([sys.executable, "-m", "kdsearch", "baselines", str(study), "--data", str(tiny_archive),
                             "--results", str(tmp_path / "results")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, cwd=tmp_path)
    os.close(slave)
    out = b""
    while True:  # read the terminal until the process closes it
        ready, _, _ = select.select([master], [], [], 300)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=300)
    os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    for name, unit in [("decoding images", "images"), ("teacher", "epochs"), ("student_ce", "epochs"),
                       ("teacher logits", "epochs")]:
        assert f"{name}: 100%|" in text and f" {unit} [" in text, (name, text[-3000:])
    assert "<00:00]" in text  # elapsed < remaining, and nothing remains at the end
    assert "student_ce: epoch 1/1" not in text  # the bar replaces the per-epoch lines
    assert "teacher logits: 2 epochs x" in text  # lines that are not steps stay
