import torch

from kdsearch.engine.losses import LOSSES, NEEDS_TEACHER, make_loss
from kdsearch.engine.models import StudentNet
from kdsearch.engine.precision import TABLE_DTYPE, half_table_error
from kdsearch.study.schema import Recipe


def _batches(seed, scale):
    """Batches as a trained teacher gives them: logits of a few units, the label's the largest."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(3):
        x, y = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
        t = scale * torch.randn(64, 10, generator=g) + 3 * scale * torch.nn.functional.one_hot(y, 10)
        out.append((x, y, t))
    return out


def test_the_float16_tables_error_is_measured_small_and_nonzero():
    torch.manual_seed(0)
    model = StudentNet()
    fns = [(f"{name} T={T}", make_loss(Recipe(loss=name, temperature=T, alpha=0.0)))
           for name in LOSSES if name in NEEDS_TEACHER for T in (1.0, 4.0)]
    errors = half_table_error(model, _batches(0, 4.0), fns)
    assert [e.name for e in errors] == [name for name, _ in fns]
    for e in errors:  # float16 keeps 11 bits: the rounding shows, and stays far below what training notices
        assert 0 < e.loss_mean <= e.loss_max < 1e-3 and 0 < e.grad_mean <= e.grad_max < 1e-2, e
    # logits that float16 holds exactly are not rounded at all: no error, so the figures measure the rounding
    exact = [(x, y, t.to(TABLE_DTYPE).float()) for x, y, t in _batches(0, 4.0)]
    assert all(e.loss_max == 0 and e.grad_max == 0 for e in half_table_error(model, exact, fns))
