import io
import tarfile

import numpy as np
import pytest
from conftest import TEST_PER_CLASS, TRAIN_PER_CLASS, write_archive
from PIL import Image

from kdsearch.core.errors import UserError
from kdsearch.data.dataset import load_arrays, stratified_split

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def png(size=(32, 32), color=(10, 20, 30)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_archive_decodes_to_uint8_arrays_with_sorted_classes(tiny_archive):
    a = load_arrays("auto", tiny_archive)
    assert a.classes == CLASSES
    assert a.train_x.shape == (10 * TRAIN_PER_CLASS, 32, 32, 3) and a.train_x.dtype == np.uint8
    assert a.test_x.shape == (10 * TEST_PER_CLASS, 32, 32, 3)
    assert np.bincount(a.train_y).tolist() == [TRAIN_PER_CLASS] * 10


def test_folder_and_archive_give_the_same_arrays(tiny_archive, tmp_path):
    with tarfile.open(tiny_archive) as tf:
        tf.extractall(tmp_path, filter="data")
    for folder in (tmp_path / "tiny", tmp_path):  # with and without the wrapping folder
        b = load_arrays("imagefolder", folder)
        a = load_arrays("imagefolder", tiny_archive)
        assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)


def test_auto_source_finds_an_image_folder_inside_one_wrapping_folder(tiny_archive, tmp_path):
    with tarfile.open(tiny_archive) as tf:
        tf.extractall(tmp_path, filter="data")  # tmp_path/tiny/{train,test}
    a = load_arrays("auto", tmp_path)
    assert a.classes == CLASSES and len(a.train_y) == 10 * TRAIN_PER_CLASS


def test_decoded_arrays_are_cached_and_a_changed_source_is_not_served_stale(tiny_files, tmp_path):
    src, cache = tmp_path / "d.tar.gz", tmp_path / "cache"
    write_archive(src, tiny_files)
    first = load_arrays("auto", src, cache)
    assert len(list((cache / "data").iterdir())) == 1
    again = load_arrays("auto", src, cache)
    assert again.key == first.key and np.array_equal(again.train_x, first.train_x)
    changed = dict(tiny_files)
    name = next(k for k in changed if k.startswith("train/cat/"))
    changed[name] = png(color=(255, 0, 0))  # same layout, one image different
    write_archive(src, changed)
    fresh = load_arrays("auto", src, cache)
    assert fresh.key != first.key
    i = sorted(k for k in changed if k.startswith("train/cat/")).index(name) + 3 * TRAIN_PER_CLASS
    assert fresh.train_x[i, 0, 0].tolist() == [255, 0, 0]


def test_stratified_split_is_disjoint_seeded_and_proportional():
    labels = np.repeat(np.arange(10), 50)
    val, rest = stratified_split(labels, 100, seed=7)
    assert len(val) == 100 and len(rest) == 400 and not set(val) & set(rest)
    assert np.bincount(labels[val]).tolist() == [10] * 10
    assert np.array_equal(val, stratified_split(labels, 100, seed=7)[0])
    assert not np.array_equal(val, stratified_split(labels, 100, seed=8)[0])
    sub, _ = stratified_split(labels, 40, seed=1, pool=rest)
    assert set(sub) <= set(rest) and np.bincount(labels[sub]).tolist() == [4] * 10


def bad(tmp_path, files, top="x"):
    return write_archive(tmp_path / "bad.tar.gz", files, top=top)


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_arrays("auto", tmp_path / "nope.tar.gz")


def test_archive_without_train_and_test(tmp_path):
    path = bad(tmp_path, {"images/cat/1.png": png()})
    with pytest.raises(UserError, match=r"bad.tar.gz holds no train/<class>/ and test/<class>/"):
        load_arrays("auto", path)


def test_folder_with_only_a_train_split(tmp_path):
    (tmp_path / "d" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "train" / "cat" / "1.png").write_bytes(png())
    with pytest.raises(UserError, match=r"holds no train/<class>/ and test/<class>/"):
        load_arrays("auto", tmp_path / "d")


def test_class_missing_from_one_split(tmp_path):
    path = bad(tmp_path, {"train/cat/1.png": png(), "train/dog/1.png": png(), "test/cat/1.png": png()})
    with pytest.raises(UserError, match="dog are in only one of train/ and test/"):
        load_arrays("auto", path)


def test_corrupt_image(tmp_path):
    path = bad(tmp_path, {"train/cat/1.png": png(), "train/cat/2.jpg": b"not a jpeg", "test/cat/1.png": png()})
    with pytest.raises(UserError, match=r"cannot decode image x/train/cat/2.jpg"):
        load_arrays("auto", path)


def test_images_of_different_sizes(tmp_path):
    path = bad(tmp_path, {"train/cat/1.png": png(), "train/cat/2.png": png((16, 16)), "test/cat/1.png": png()})
    with pytest.raises(UserError, match=r"2.png is 16x16 but the others are 32x32"):
        load_arrays("auto", path)


def test_a_file_that_is_not_an_archive_or_a_damaged_archive_gets_one_line(tiny_archive, tmp_path):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UserError, match="is a file but not a tar archive") as e:
        load_arrays("auto", broken)
    assert "\n" not in str(e.value) and "fix:" in str(e.value)
    truncated = tmp_path / "truncated.tar.gz"  # a real archive, cut short: tarfile fails midway
    truncated.write_bytes(tiny_archive.read_bytes()[:30000])
    with pytest.raises(UserError, match="cannot read archive") as e:
        load_arrays("auto", truncated)
    assert "\n" not in str(e.value) and "fix:" in str(e.value)
