"""The image-folder layout and its one parser and decoder.

train/<class>/<image> and test/<class>/<image>, in a folder or a .tar.gz / .tar archive, with at most one
wrapping folder around train/ and test/. Classes are the sorted folder names."""
import io
import tarfile
from pathlib import Path

import numpy as np

from kdsearch.core.errors import UserError, first_line
from kdsearch.core.progress import progress

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "test")


def resized(image, size):
    """A PIL image as uint8 (H, W, 3), resized to size x size when size is given (bicubic, antialiased: PIL
    widens its filter when it shrinks)."""
    from PIL import Image
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image)


def is_archive(path):
    return str(path).endswith((".tar.gz", ".tgz", ".tar"))


def has_splits(folder):
    """A folder with train/ or test/ (either: a folder missing the other gets the clear layout error later)."""
    folder = Path(folder)
    return (folder / "train").is_dir() or (folder / "test").is_dir()


def layout(parts):
    """('top', 'train', 'cat', 'x.jpg') -> ('train', 'cat', 'x.jpg'), dropping one wrapping folder; None for a
    path that is not an image of the layout."""
    if len(parts) == 4 and parts[1] in SPLITS:
        parts = parts[1:]
    if len(parts) == 3 and parts[0] in SPLITS and Path(parts[2]).suffix.lower() in IMAGE_EXTS:
        return tuple(parts)
    return None


def read_files(path, limit=None):
    """{(split, class): [(name, bytes), ...]} from an archive or a folder, each list sorted by name.
    limit: {split: n} keeps the first n images (in reading order) of every class of that split."""
    path = Path(path)
    files = _archive(path, limit) if path.is_file() else _folder(path, limit)
    for v in files.values():
        v.sort()
    return files


def _keep(files, key, limit):
    return limit is None or len(files.get(key, ())) < limit.get(key[0], float("inf"))


def _archive(path, limit):
    files = {}
    try:
        with tarfile.open(path) as tf:
            for m in tf:
                parts = layout(Path(m.name).parts) if m.isfile() else None
                if parts and _keep(files, parts[:2], limit):
                    files.setdefault(parts[:2], []).append((m.name, tf.extractfile(m).read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        # tarfile's messages run to several lines
        raise UserError(f"cannot read archive {path} ({first_line(e, 150)}); fix: give a .tar.gz "
                        f"image-folder archive, a folder with train/ and test/, or a CIFAR-10 folder") from None
    return files


def _folder(path, limit):
    tops = [path] if (path / "train").is_dir() else [path] + sorted(d for d in path.iterdir() if d.is_dir())
    files = {}
    for root in tops:
        for f in sorted(root.glob("*/*/*")):
            parts = layout(f.relative_to(root).parts)
            if parts and f.is_file() and _keep(files, parts[:2], limit):
                try:
                    files.setdefault(parts[:2], []).append((str(f), f.read_bytes()))
                except OSError as e:
                    raise UserError(f"cannot read image {f} ({e.strerror}); fix: check its permissions") from None
        if files:
            break
    return files


def decode(path, size=None):
    """(train_x, train_y, test_x, test_y, classes): images uint8 (N, H, W, 3), labels int64 (N,). Grayscale,
    palette and RGBA images become RGB; size: resize each to size x size (antialiased), else all must share one."""
    files = read_files(path)
    splits = {s: sorted(c for (sp, c) in files if sp == s) for s in SPLITS}
    if not splits["train"] or not splits["test"]:
        raise UserError(f"{path} holds no train/<class>/ and test/<class>/ image folders; fix: give an archive or "
                        f"folder laid out as train/<class>/*.jpg and test/<class>/*.jpg")
    if splits["train"] != splits["test"]:
        only = sorted(set(splits["train"]) ^ set(splits["test"]))
        raise UserError(f"{path}: class folder(s) {', '.join(only)} are in only one of train/ and test/; fix: give "
                        f"both splits the same class folders")
    classes = splits["train"]
    out = []
    with progress(sum(len(v) for v in files.values()), "decoding images", unit="images") as bar:
        for split in SPLITS:  # the test images must have the training images' size
            items = [(label, name, blob) for label, cls in enumerate(classes) for name, blob in files[(split, cls)]]
            out += _decode_split(path, items, size, bar, out[0].shape[1:] if out else None)
    return (*out, classes)


def _decode_split(path, items, size, bar, shape):
    """(images, labels) of one split's items, (label, name, blob) each; `shape`: the size every image must have
    (None: the first one's)."""
    xs, ys = [], []
    for label, name, blob in items:
        img = _decode_image(path, name, blob, size)
        if shape is None:
            shape = img.shape
        elif img.shape != shape:
            raise UserError(f"{path}: image {name} is {img.shape[1]}x{img.shape[0]} but the others are "
                            f"{shape[1]}x{shape[0]}; fix: set data.image_size in the study file to resize "
                            f"them all on decode (e.g. image_size: {shape[0]})")
        xs.append(img)
        ys.append(label)
        bar.step("")
    return [np.stack(xs), np.asarray(ys, np.int64)]


def _decode_image(path, name, blob, size):
    from PIL import Image
    try:
        with Image.open(io.BytesIO(blob)) as im:
            return resized(im.convert("RGB"), size)
    except Exception as e:
        raise UserError(f"{path}: cannot decode image {name} ({type(e).__name__}); fix: replace or remove "
                        f"that file") from None
