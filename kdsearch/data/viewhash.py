"""The random choices of a view as integer hashes of (seed, epoch, image): every crop, flip, partner and weight
the same on any device, in any batch order (augment.py's docstring says why)."""
_MASK = 0xFFFFFFFF


def hash32(x):
    # A well-mixed bijection on 32-bit integers ("lowbias32"-style). Products stay below 2**63, so it is exact
    # in int64 on every device, and the same for Python ints and tensors.
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK
    return (x >> 16) ^ x


def epoch_key(views, epoch):
    return hash32(hash32((views.seed & _MASK) ^ 0x9E3779B9) ^ (views.epoch(epoch) & _MASK))


def stream(views, epoch, idx, salt):
    """A hash of each index of `idx` for one random choice (`salt`) of the epoch's views: independent of the
    crop's hash and of each other."""
    return hash32(idx.long() ^ hash32(epoch_key(views, epoch) ^ salt))


def uniform(h):
    return (h.double() + 0.5) / 2 ** 32  # in (0, 1)
