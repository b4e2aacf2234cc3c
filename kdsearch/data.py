"""Datasets as uint8 arrays: decode once, cache on disk, split into train / validation / test.

Sources:
- "cifar10": torchvision's CIFAR10, downloaded into a data folder (the path real users take).
- "imagefolder": a folder or a .tar.gz archive holding train/<class>/* and test/<class>/* (one top-level folder
  around them is allowed). Classes are the sorted folder names.
- "auto": an archive, or a folder with train/ and test/, is an image folder; anything else is a CIFAR10 root.

Decoded arrays are cached as one .npy file per array under <cache>/data/<key>/, where the key is a hash of the
source's content (archive) or of its files' names, sizes and modification times (folder): a changed source gets
a new key, so a stale cache is never served. Loading a cached CIFAR-10 is a few hundred MB of plain reads.
"""
import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff"}
CACHE_VERSION = "1"  # bump when the decoded layout changes


@dataclass
class Arrays:
    """A decoded dataset: images uint8 (N, H, W, 3) (NHWC, as decoded), labels int64 (N,)."""
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list
    key: str = ""  # fingerprint of the source: part of every cache key built on this data


def is_archive(path):
    return str(path).endswith((".tar.gz", ".tgz", ".tar"))


def resolve_source(source, path):
    path = Path(path)
    if source != "auto":
        return source
    def has_splits(p):  # either split: a folder missing the other gets the clear image-folder error
        return (p / "train").is_dir() or (p / "test").is_dir()

    if is_archive(path) or path.is_file() or has_splits(path):
        return "imagefolder"
    if path.is_dir() and any(has_splits(d) for d in path.iterdir() if d.is_dir()):
        return "imagefolder"  # one wrapping folder around train/ and test/
    return "cifar10"


def check_source(source, path):
    """The source's kind; a missing image-folder path is an error (a CIFAR10 folder is created by download)."""
    path = Path(path).expanduser()
    source = resolve_source(source, path)
    if source == "imagefolder" and not path.exists():
        raise UserError(f"data path {path} does not exist; fix: give --data an image-folder archive (.tar.gz) "
                        f"or a folder with train/ and test/")
    return source


def load_arrays(source, path, cache_dir=None):
    """Decode (or read from the cache) the whole dataset named by (source, path)."""
    path = Path(path).expanduser()
    source = check_source(source, path)
    if source == "cifar10" and not (path / "cifar-10-batches-py").is_dir():
        _download_cifar10(path)  # first use; later, torchvision's md5 check runs only when decoding (a cache miss)
    key = _fingerprint(source, path)
    if cache_dir is not None:
        cached = _read_cache(Path(cache_dir) / "data" / key)
        if cached is not None:
            cached.key = key
            return cached
    arrays = _decode_cifar10(path) if source == "cifar10" else _decode_imagefolder(path)
    arrays.key = key
    if cache_dir is not None:
        _write_cache(Path(cache_dir) / "data" / key, arrays)
    return arrays


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


def _decode_cifar10(root):
    import torchvision
    try:
        tr = torchvision.datasets.CIFAR10(root=str(root), train=True, download=False)
        te = torchvision.datasets.CIFAR10(root=str(root), train=False, download=False)
    except RuntimeError:  # torchvision's integrity check failed
        raise UserError(f"{root / 'cifar-10-batches-py'} is incomplete or corrupt; fix: delete that folder and run "
                        f"again to download CIFAR-10 afresh") from None
    return Arrays(np.ascontiguousarray(tr.data), np.asarray(tr.targets, np.int64),
                  np.ascontiguousarray(te.data), np.asarray(te.targets, np.int64), list(tr.classes))


# ---- image folders: a directory or an archive ----

def _decode_imagefolder(path):
    files = _list_archive(path) if path.is_file() else _list_folder(path)  # {(split, class): [(name, bytes)]}
    splits = {s: sorted(c for (sp, c) in files if sp == s) for s in ("train", "test")}
    if not splits["train"] or not splits["test"]:
        raise UserError(f"{path} holds no train/<class>/ and test/<class>/ image folders; fix: give an archive or "
                        f"folder laid out as train/<class>/*.jpg and test/<class>/*.jpg")
    if splits["train"] != splits["test"]:
        only = sorted(set(splits["train"]) ^ set(splits["test"]))
        raise UserError(f"{path}: class folder(s) {', '.join(only)} are in only one of train/ and test/; fix: give "
                        f"both splits the same class folders")
    classes = splits["train"]
    out, shape = {}, None
    for split in ("train", "test"):
        xs, ys = [], []
        for label, cls in enumerate(classes):
            for name, blob in files[(split, cls)]:
                img = _decode_image(path, name, blob)
                if shape is None:
                    shape = img.shape
                elif img.shape != shape:
                    raise UserError(f"{path}: image {name} is {img.shape[1]}x{img.shape[0]} but the others are "
                                    f"{shape[1]}x{shape[0]}; fix: resize all images to one size")
                xs.append(img)
                ys.append(label)
        out[split] = (np.stack(xs), np.asarray(ys, np.int64))
    return Arrays(*out["train"], *out["test"], classes)


def _decode_image(path, name, blob):
    from PIL import Image
    try:
        with Image.open(io.BytesIO(blob)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise UserError(f"{path}: cannot decode image {name} ({type(e).__name__}); fix: replace or remove "
                        f"that file") from None


def _split_parts(parts):
    """('top', 'train', 'cat', 'x.jpg') -> ('train', 'cat', 'x.jpg'): drop one wrapping folder, if any."""
    if len(parts) == 4 and parts[1] in ("train", "test"):
        parts = parts[1:]
    if len(parts) == 3 and parts[0] in ("train", "test") and Path(parts[2]).suffix.lower() in IMAGE_EXTS:
        return parts
    return None


def _list_archive(path):
    files = {}
    try:
        with tarfile.open(path) as tf:
            for m in tf:
                parts = _split_parts(Path(m.name).parts) if m.isfile() else None
                if parts:
                    files.setdefault(tuple(parts[:2]), []).append((m.name, tf.extractfile(m).read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"cannot read archive {path} ({type(e).__name__}: {e}); fix: give a valid .tar.gz "
                        f"image-folder archive") from None
    for v in files.values():
        v.sort()
    return files


def _list_folder(path):
    top = [path] + ([d for d in path.iterdir() if d.is_dir()] if not (path / "train").is_dir() else [])
    files = {}
    for root in top:
        for f in sorted(root.glob("*/*/*")):
            parts = _split_parts(f.relative_to(root).parts)
            if parts and f.is_file():
                try:
                    files.setdefault(tuple(parts[:2]), []).append((str(f), f.read_bytes()))
                except OSError as e:
                    raise UserError(f"cannot read image {f} ({e.strerror}); fix: check its permissions") from None
        if files:
            break
    return files


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
