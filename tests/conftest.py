"""Shared fixtures: a small stratified subset of the shared CIFAR-10 archive, built once per test session."""
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kdsearch.data.imagefolder import layout, read_files

SHARED_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
ARCHIVE = Path(os.environ.get("KDSEARCH_TEST_ARCHIVE", SHARED_ARCHIVE))
TRAIN_PER_CLASS, TEST_PER_CLASS = 40, 10


def kdsearch(*args, **kw):
    """The command line as a user runs it, in its own process: its CompletedProcess (kw: cwd, env)."""
    return subprocess.run([sys.executable, "-m", "kdsearch", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


def write_archive(path, files, top="tiny"):
    """files: {relative name: bytes} -> a .tar.gz with every name under folder `top`."""
    with tarfile.open(path, "w:gz") as tf:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return path


@pytest.fixture(scope="session")
def tiny_files():
    """{"train/<class>/<file>": jpeg bytes}: the first 40 train and 10 test images of every class."""
    if not ARCHIVE.exists():
        pytest.fail(f"the shared CIFAR-10 archive is missing at {ARCHIVE} (set KDSEARCH_TEST_ARCHIVE)")
    files = read_files(ARCHIVE, limit={"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS})
    return {"/".join(layout(Path(name).parts)): blob for items in files.values() for name, blob in items}


@pytest.fixture(scope="session")
def tiny_archive(tiny_files, tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("data") / "tiny.tar.gz", tiny_files)


TINY_BASE = """\
name: tiny
seed: 0
threads: 2
data:
  val_size: 100
teacher:
  epochs: 1
  batch_size: 64
baselines:
  student_mse: {epochs: 1, batch_size: 64}
  student_ce: {epochs: 1, batch_size: 64}
  kd_reference: {epochs: 2, batch_size: 64}
"""
TINY_SPACE = """\
space:
  temperature: {type: loguniform, low: 1, high: 20}
  alpha: {type: uniform, low: 0, high: 1}
  lr: {type: loguniform, low: 0.0001, high: 0.01}
  epochs: {type: int, low: 1, high: 2}
"""
TINY_STUDY = TINY_BASE + TINY_SPACE  # the teacher's logit table: 2 epochs, the longest KD run of the study


@pytest.fixture
def tiny_study(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_STUDY)
    return path


def stored(folder):
    """{file: its modification time} of every file in the store: what a command trained or computed, and when."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def plot(path, size, min_colours=100):
    """The PNG's RGB pixels, once it decodes at `size` (inches, at the report's 90 dpi) and is no blank canvas:
    text, axes and data give it hundreds of distinct colours."""
    import matplotlib.image
    import numpy as np
    img = matplotlib.image.imread(path)
    assert img.shape == (round(size[1] * 90), round(size[0] * 90), 4), (path.name, img.shape)
    rgb = img[..., :3]
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > min_colours, path.name
    return rgb


def pixels(rgb, color):
    """How many pixels are `color` (a matplotlib colour name), within rounding."""
    import numpy as np
    from matplotlib.colors import to_rgb
    return int((np.abs(rgb - np.array(to_rgb(color))).max(-1) < 0.02).sum())
