"""The study's data: decoded once (cached on disk), split, and held as uint8 tensors on the training device.

Sources:
- "cifar10": torchvision's CIFAR10, downloaded into a data folder (the path real users take).
- "imagefolder": a folder or a .tar.gz archive in the image-folder layout (imagefolder.py).
- "auto": an archive or other file, or a folder with train/ and test/ (or one wrapping folder around them), is
  an image folder; anything else is a CIFAR10 root.

Decoded arrays are cached as one .npy file per array under <cache>/data/<key>/, where the key is a hash of the
source's content (archive) or of its files' names, sizes and modification times (folder): a changed source gets
a new key, so a stale cache is never served. Loading a cached CIFAR-10 is a few hundred MB of plain reads.
"""
import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdsearch.core.errors import UserError
from kdsearch.data import imagefolder

CACHE_VERSION = "1"  # bump when the decoded layout changes
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class Arrays:
    """A decoded dataset: images uint8 (N, H, W, 3) (NHWC, as decoded), labels int64 (N,)."""
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list
    key: str = ""  # fingerprint of the source: part of every cache key built on this data
    cached: bool = False  # read from (or written into) the cache


@dataclass
class Split:
    x: torch.Tensor  # uint8 (N, 3, H, W), channels_last (NHWC storage), on the training device
    y: torch.Tensor  # int64 (N,)

    def __len__(self):
        return len(self.y)


@dataclass
class StudyData:
    train: Split
    val: Split
    test: Split
    classes: list
    key: str  # fingerprint of the source and the split: part of every cache key built on this data

    @property
    def image_size(self):
        """(H, W) of every image."""
        return tuple(self.train.x.shape[2:])


def resolve_source(source, path):
    path = Path(path)
    if source != "auto":
        return source
    if imagefolder.is_archive(path) or path.is_file() or imagefolder.has_splits(path):
        return "imagefolder"
    if path.is_dir() and any(imagefolder.has_splits(d) for d in path.iterdir() if d.is_dir()):
        return "imagefolder"  # one wrapping folder around train/ and test/
    return "cifar10"


def check_source(source, path):
    """The one data-path check, cheap, before anything runs: returns the source's kind. A missing image-folder
    path, or a file that is not a tar archive, is an error (a CIFAR10 folder is created by the download)."""
    path = Path(path).expanduser()
    source = resolve_source(source, path)
    fix = "fix: give --data an image-folder archive (.tar.gz), a folder with train/ and test/, or a CIFAR-10 folder"
    if source == "imagefolder" and not path.exists():
        raise UserError(f"data path {path} does not exist; {fix}")
    if source == "imagefolder" and path.is_file() and not _is_tar(path):
        raise UserError(f"data path {path} is a file but not a tar archive; {fix}")
    return source


def _is_tar(path):
    try:
        return tarfile.is_tarfile(path)
    except OSError as e:
        raise UserError(f"cannot read data path {path} ({e.strerror}); fix: check its permissions") from None


def load_arrays(source, path, cache_dir=None, image_size=None, write=True):
    """Decode (or read from the cache) the whole dataset named by (source, path), each image resized to
    image_size x image_size when given. write=False: a newly decoded dataset is cached by `cache_arrays` later
    (once the study's networks have been checked on it: a mistake leaves no cache behind)."""
    path = Path(path).expanduser()
    source = check_source(source, path)
    if source == "cifar10" and not (path / "cifar-10-batches-py").is_dir():
        _download_cifar10(path)  # first use; later, torchvision's md5 check runs only when decoding (a cache miss)
    key = _fingerprint(source, path) + ("" if image_size is None else f"-{image_size}px")
    if cache_dir is not None:
        cached = _read_cache(Path(cache_dir) / "data" / key)
        if cached is not None:
            cached.key, cached.cached = key, True
            return cached
    if source == "cifar10":
        arrays = _decode_cifar10(path, image_size)
    else:
        arrays = Arrays(*imagefolder.decode(path, image_size))
    arrays.key = key
    if cache_dir is not None and write:
        cache_arrays(arrays, cache_dir)
    return arrays


def cache_arrays(arrays, cache_dir):
    """Write a decoded dataset into the cache under its key (a dataset read from the cache is there already)."""
    if not arrays.cached:
        _write_cache(Path(cache_dir) / "data" / arrays.key, arrays)
        arrays.cached = True


# ---- fingerprints and the on-disk cache ----

def _fingerprint(source, path):
    h = hashlib.sha256(f"{CACHE_VERSION}:{source}:".encode())
    if path.is_file():  # an archive: hash its bytes (19 MB for CIFAR-10: a few tens of ms)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    else:
        for root, dirs, files in sorted(os.walk(path)):
            dirs.sort()
            for name in sorted(files):
                st = os.stat(os.path.join(root, name))
                h.update(f"{os.path.relpath(os.path.join(root, name), path)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:20]


_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def _read_cache(folder):
    if not (folder / "classes.json").exists():
        return None
    try:
        parts = {name: np.load(folder / f"{name}.npy") for name in _ARRAYS}
        classes = json.loads((folder / "classes.json").read_text())
    except (OSError, ValueError):
        return None  # a damaged cache is rebuilt, not trusted
    return Arrays(classes=classes, **parts)


def _write_cache(folder, arrays):
    # write into a temporary folder and rename it into place: a crash leaves no half-written cache behind
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(arrays, name))
        (tmp / "classes.json").write_text(json.dumps(arrays.classes))
        shutil.rmtree(folder, ignore_errors=True)  # a damaged cache (one that failed to load) is replaced
        tmp.rename(folder)
    except OSError:  # another process got there first, or the disk is full: the cache is only an optimisation
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- CIFAR10 through torchvision ----

def _download_cifar10(root):
    import torchvision
    try:
        for train in (True, False):
            torchvision.datasets.CIFAR10(root=str(root), train=train, download=True)
    except Exception as e:  # network or disk trouble: say where, and what else works
        raise UserError(f"could not get CIFAR-10 into {root} ({type(e).__name__}: {str(e)[:120]}); fix: check the "
                        f"network, or give --data an image-folder archive of CIFAR-10") from None


def _decode_cifar10(root, size=None):
    import torchvision
    try:
        tr = torchvision.datasets.CIFAR10(root=str(root), train=True, download=False)
        te = torchvision.datasets.CIFAR10(root=str(root), train=False, download=False)
    except RuntimeError:  # torchvision's integrity check failed
        raise UserError(f"{root / 'cifar-10-batches-py'} is incomplete or corrupt; fix: delete that folder and run "
                        f"again to download CIFAR-10 afresh") from None
    def images(split):
        if size is None or split.data.shape[1:3] == (size, size):
            return np.ascontiguousarray(split.data)
        from PIL import Image
        return np.stack([imagefolder.resized(Image.fromarray(img), size) for img in split.data])
    return Arrays(images(tr), np.asarray(tr.targets, np.int64), images(te), np.asarray(te.targets, np.int64),
                  list(tr.classes))


# ---- splits ----

def stratified_split(labels, size, seed, pool=None):
    """Split `pool` (default: all indices) into (taken, rest), `taken` holding `size` indices drawn per class in
    proportion to the class sizes (largest remainder), seeded. Both are sorted."""
    pool = np.arange(len(labels)) if pool is None else np.asarray(pool)
    if not 0 <= size <= len(pool):
        raise ValueError(f"cannot take {size} of {len(pool)} images")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels[pool], return_counts=True)
    exact = counts * size / len(pool)
    take = np.floor(exact).astype(int)
    take[np.argsort(-(exact - take), kind="stable")[: size - take.sum()]] += 1
    taken = [rng.permutation(pool[labels[pool] == c])[:k] for c, k in zip(classes, take)]
    taken = np.sort(np.concatenate(taken)) if taken else np.zeros(0, int)
    return taken, np.setdiff1d(pool, taken)


def to_split(x_nhwc, y, device):
    """NHWC uint8 images (numpy) -> a Split on `device`, viewed as NCHW over NHWC storage (channels_last)."""
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc)).to(device).permute(0, 3, 1, 2)
    return Split(x, torch.from_numpy(np.asarray(y, np.int64)).to(device))


def prepare(arrays, val_size, train_subset, seed, device):
    """Carve the seeded, stratified validation split (and an optional training subset) and move everything
    to `device` as uint8 tensors."""
    val_idx, train_idx = stratified_split(arrays.train_y, val_size, seed)
    if train_subset is not None and train_subset < len(train_idx):
        train_idx, _ = stratified_split(arrays.train_y, train_subset, seed + 1, pool=train_idx)
    key = f"{arrays.key}-v{val_size}-s{train_subset}-seed{seed}"
    return StudyData(
        train=to_split(arrays.train_x[train_idx], arrays.train_y[train_idx], device),
        val=to_split(arrays.train_x[val_idx], arrays.train_y[val_idx], device),
        test=to_split(arrays.test_x, arrays.test_y, device),
        classes=list(arrays.classes), key=key)
