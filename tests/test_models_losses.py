import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdsearch.engine.losses import make_loss
from kdsearch.engine.models import StudentNet, TeacherNet, count_params
from kdsearch.study.schema import Recipe
from kdsearch.tools.bench import NotebookStudentNet


def notebook_teacher_names():
    names = []
    for block, chans in (("block1", 64), ("block2", 128), ("block3", 256)):
        for i in (0, 3):
            names += [f"{block}.{i}.weight", f"{block}.{i}.bias"]
            j = i + 1
            names += [f"{block}.{j}.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    names += ["classifier.1.weight", "classifier.1.bias"]
    names += [f"classifier.2.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    names += ["classifier.4.weight", "classifier.4.bias"]
    return names


def test_parameter_counts_are_the_notebooks():
    assert count_params(TeacherNet()) == 3_251_018  # the notebook's printed counts
    assert count_params(StudentNet()) == 545_098


def test_teacher_state_dict_names_are_the_notebooks():
    assert list(TeacherNet().state_dict()) == notebook_teacher_names()


def test_notebook_student_state_dict_loads_and_gives_the_same_outputs_and_gradients_within_rounding():
    torch.manual_seed(0)
    ref = NotebookStudentNet()  # the notebook's forward: ReLU before pooling
    ours = StudentNet()
    ours.load_state_dict(ref.state_dict())  # strict: same names and shapes
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    out_ref, out = ref(x), ours(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, out_ref)
    F.cross_entropy(out_ref, y).backward()
    F.cross_entropy(out, y).backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.5, 2.5]])
    y = torch.tensor([1, 2])
    T, alpha = 2.5, 0.3

    def softmax(v, T=1.0):
        e = [math.exp(a / T) for a in v]
        return [a / sum(e) for a in e]

    ce = sum(-math.log(softmax(row)[label]) for row, label in zip(s.tolist(), y.tolist())) / 2
    kl = sum(sum(p * math.log(p / q) for p, q in zip(softmax(tr, T), softmax(sr, T)))
             for sr, tr in zip(s.tolist(), t.tolist())) / 2  # batchmean
    expected = alpha * ce + (1 - alpha) * T * T * kl
    loss, parts = make_loss(Recipe(loss="kd", temperature=T, alpha=alpha))(s, y, t)
    got = loss.item()
    assert got == pytest.approx(expected, rel=1e-5)
    # the parts are the unweighted terms, detached
    assert parts["hard"].item() == pytest.approx(ce, rel=1e-5)
    assert parts["soft"].item() == pytest.approx(T * T * kl, rel=1e-5)
    assert not parts["hard"].requires_grad
    # the notebook's own expression (KLDivLoss on probabilities) agrees
    nb = alpha * F.cross_entropy(s, y) + (1 - alpha) * T * T * nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1))
    assert got == pytest.approx(nb.item(), rel=1e-5)


def test_kd_loss_is_the_same_float_computation_as_before_the_registry():
    """Training at a given seed must not change: the loss and its gradient equal the earlier expression exactly."""
    torch.manual_seed(0)
    s, t, y = torch.randn(64, 10) * 3, torch.randn(64, 10) * 3, torch.randint(0, 10, (64,))
    T, alpha = 4.5, 0.8
    s_new, s_old = s.clone().requires_grad_(), s.clone().requires_grad_()
    new, _ = make_loss(Recipe(loss="kd", temperature=T, alpha=alpha))(s_new, y, t)
    old = alpha * F.cross_entropy(s_old, y) + (1 - alpha) * T * T * F.kl_div(
        F.log_softmax(s_old / T, dim=1), F.log_softmax(t / T, dim=1), reduction="batchmean", log_target=True)
    new.backward()
    old.backward()
    assert torch.equal(new, old) and torch.equal(s_new.grad, s_old.grad)


def test_alpha_one_is_plain_cross_entropy_and_mse_uses_one_hot():
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([0, 3, 9, 3])
    kd, _ = make_loss(Recipe(loss="kd", alpha=1.0))(s, y, t)
    ce, parts = make_loss(Recipe(loss="ce"))(s, y, None)
    assert kd.item() == pytest.approx(ce.item()) and set(parts) == {"hard"}
    mse, _ = make_loss(Recipe(loss="mse"))(s, y, None)
    assert mse.item() == pytest.approx(((s - F.one_hot(y, 10).float()) ** 2).mean().item())


def test_a_loss_is_built_once_with_its_recipe_and_keeps_those_values():
    recipe = Recipe(loss="kd", temperature=2.0, alpha=0.25)
    fn = make_loss(recipe)
    s, t, y = torch.randn(6, 10, requires_grad=True), torch.randn(6, 10), torch.randint(0, 10, (6,))
    before, parts = fn(s, y, t)
    recipe.alpha = 0.9  # a later change to the recipe does not reach a built loss
    again, _ = fn(s, y, t)
    assert again.item() == before.item()
    assert before.item() == pytest.approx(0.25 * parts["hard"].item() + 0.75 * parts["soft"].item(), rel=1e-6)
    before.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def _plain(name, s, y, t, T, alpha, beta=None, gamma=None):
    """Each distillation loss written out sample by sample from its paper's formula, in float64."""
    s, t = s.double(), t.double()
    n, c = s.shape
    sm = lambda x: torch.exp(x) / torch.exp(x).sum()  # noqa: E731
    kl = lambda p, q: (p * (p.log() - q.log())).sum()  # noqa: E731  KL(p || q)
    ce = sum(-torch.log(sm(s[i])[y[i]]) for i in range(n)) / n
    if name == "kd_ls":
        z = lambda x: (x - x.mean()) / (x.std() + 1e-7)  # noqa: E731
        distill = sum(T * T * kl(sm(z(t[i]) / T), sm(z(s[i]) / T)) for i in range(n)) / n
    elif name == "dkd":
        total = 0
        for i in range(n):
            ps, pt = sm(s[i] / T), sm(t[i] / T)
            g = int(y[i])
            tckd = kl(torch.stack([pt[g], 1 - pt[g]]), torch.stack([ps[g], 1 - ps[g]]))
            keep = [k for k in range(c) if k != g]
            nckd = kl(sm(t[i, keep] / T), sm(s[i, keep] / T))
            total = total + T * T * (tckd + (8.0 if beta is None else beta) * nckd)
        distill = total / n
    else:  # dist
        ps = torch.stack([sm(s[i] / T) for i in range(n)])
        pt = torch.stack([sm(t[i] / T) for i in range(n)])

        def pearson(a, b):
            a, b = a - a.mean(), b - b.mean()
            return (a * b).sum() / (a.norm() * b.norm() + 1e-8)

        inter = 1 - sum(pearson(ps[i], pt[i]) for i in range(n)) / n
        intra = 1 - sum(pearson(ps[:, k], pt[:, k]) for k in range(c)) / c
        distill = T * T * ((1.0 if beta is None else beta) * inter + (1.0 if gamma is None else gamma) * intra)
    return alpha * ce + (1 - alpha) * distill


@pytest.mark.parametrize("name,T,alpha,beta,gamma", [
    ("kd_ls", 2.0, 0.1, None, None), ("kd_ls", 4.0, 0.5, None, None), ("dkd", 4.0, 0.5, None, None),
    ("dkd", 2.0, 0.3, 2.0, None), ("dist", 1.0, 0.5, None, None), ("dist", 3.0, 0.2, 2.0, 0.5)])
def test_each_distillation_loss_matches_its_formula_in_value_and_gradient(name, T, alpha, beta, gamma):
    g = torch.Generator().manual_seed(0)
    s = (3 * torch.randn(16, 10, generator=g)).requires_grad_()
    t, y = 3 * torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g)
    s64 = s.detach().double().requires_grad_()
    loss, parts = make_loss(Recipe(loss=name, temperature=T, alpha=alpha, beta=beta, gamma=gamma))(s, y, t)
    want = _plain(name, s64, y, t, T, alpha, beta, gamma)
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    loss.backward()
    want.backward()
    assert torch.allclose(s.grad.double(), s64.grad, rtol=1e-3, atol=1e-6)
    assert parts["hard"].item() == pytest.approx(torch.nn.functional.cross_entropy(s, y).item())


def test_dkd_by_hand_on_three_classes():
    # T 1, target class 0; teacher probabilities (0.5, 0.25, 0.25), student (0.25, 0.5, 0.25)
    t = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    s = torch.log(torch.tensor([[0.25, 0.5, 0.25]]))
    _, parts = make_loss(Recipe(loss="dkd", temperature=1.0, alpha=0.0))(s, torch.tensor([0]), t)
    # TCKD: KL((0.5, 0.5) || (0.25, 0.75)); NCKD: KL((0.5, 0.5) || (2/3, 1/3)) over the non-target classes
    tckd = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    nckd = 0.5 * math.log(0.5 / (2 / 3)) + 0.5 * math.log(0.5 / (1 / 3))
    assert parts["tckd"].item() == pytest.approx(tckd, rel=1e-5)
    assert parts["nckd"].item() == pytest.approx(nckd, rel=1e-5)


def test_kd_is_tckd_plus_the_teacher_weighted_nckd_per_sample():
    """KD = TCKD + (1 - p_target(teacher)) * NCKD (Zhao et al., eq. 3): ties dkd to kd."""
    g = torch.Generator().manual_seed(1)
    for i in range(8):
        s, t = 2 * torch.randn(1, 10, generator=g), 2 * torch.randn(1, 10, generator=g)
        y, T = torch.randint(0, 10, (1,), generator=g), 4.0
        _, kd = make_loss(Recipe(loss="kd", temperature=T, alpha=0.0))(s, y, t)
        _, dkd = make_loss(Recipe(loss="dkd", temperature=T, alpha=0.0))(s, y, t)
        p_target = torch.softmax(t / T, dim=1)[0, y].item()
        assert kd["soft"].item() == pytest.approx(dkd["tckd"].item() + (1 - p_target) * dkd["nckd"].item(),
                                                  rel=1e-4, abs=1e-6)


def test_kd_ls_ignores_a_shift_and_a_scale_of_either_logits():
    g = torch.Generator().manual_seed(2)
    s, t, y = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g), torch.randint(0, 10, (8,), generator=g)
    fn = make_loss(Recipe(loss="kd_ls", temperature=2.0, alpha=0.0))
    base, _ = fn(s, y, t)
    moved, _ = fn(3.0 * s + 5.0, y, 0.5 * t - 2.0)
    assert moved.item() == pytest.approx(base.item(), rel=1e-4)
