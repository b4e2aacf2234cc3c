"""Mixup and CutMix views (augment.py) and the period of the views: each mixed view against a per-image
reference (partner, weight, labels), the teacher's table exact for mixed views, the mixed labels in the hard term,
and a table that stays `period` epochs long. On real images (the tiny subset) where a network sees them."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from test_augment import images, reference_view

from kdsearch.core.errors import UserError
from kdsearch.data.augment import Mix, MixedLabels, Views, augmented_views, mix_params, training_batch, view_params
from kdsearch.data.dataset import Split, load_arrays, prepare
from kdsearch.engine.loop import Lesson, new_model, predict, train
from kdsearch.engine.losses import make_loss
from kdsearch.engine.networks import notebook_networks
from kdsearch.engine.precision import TABLE_DTYPE
from kdsearch.phase.context import StudyContext, mix_views
from kdsearch.phase.store import Store
from kdsearch.phase.teacher import logit_mixes, logit_table
from kdsearch.study.schema import Recipe, Study, key_fields, load_study

NETS, CPU = notebook_networks(), torch.device("cpu")
MIXUP, CUTMIX = Mix("mixup", 0.4, 0.8), Mix("cutmix", 1.0, 0.5)


@pytest.fixture(scope="module")
def data(tiny_archive):
    return prepare(load_arrays("auto", tiny_archive), 100, None, 0, CPU)


def reference(x, y, i, views, epoch):
    """View i of epoch `epoch` the slow way: its own and its partner's crop and flip, one image at a time, mixed
    by the weight (or box) that mix_params gives image i alone; returns (view, own label, partner label, weight)."""
    one = torch.tensor([i])
    partner, lam, box = mix_params(views, epoch, one, len(x), x.shape[2:])
    j, lam = int(partner), float(lam)

    def plain(k):
        dy, dx, flip = (int(v) for v in view_params(views, epoch, torch.tensor([k])))
        return reference_view(x[k], dy, dx, bool(flip), views.padding, views.mean, views.std)
    own, other = plain(i), plain(j)
    if box is None:
        return lam * own + (1 - lam) * other, y[i], y[j], lam
    y0, y1, x0, x1 = (int(b) for b in box)
    out = own.clone()
    out[:, y0:y1, x0:x1] = other[:, y0:y1, x0:x1]
    assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / (x.shape[2] * x.shape[3]))  # the own pixels' share
    return out, y[i], y[j], lam


@pytest.mark.parametrize("mix", [MIXUP, CUTMIX])
def test_mixed_views_and_labels_equal_the_per_image_reference(mix):
    x, y = images(), torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1))
    views = Views(3, mix=mix)
    idx = torch.randperm(64, generator=torch.Generator().manual_seed(2))[:40]
    got, labels = training_batch(Split(x, y), idx, views, epoch=5)
    assert isinstance(labels, MixedLabels) and got.is_contiguous(memory_format=torch.channels_last)
    weights = []
    for b, i in enumerate(idx.tolist()):
        view, own, partner, lam = reference(x, y, i, views, 5)
        torch.testing.assert_close(got[b], view, rtol=1e-5, atol=1e-5)
        assert (int(labels.own[b]), int(labels.partner[b])) == (int(own), int(partner))
        assert float(labels.weight[b]) == pytest.approx(lam, abs=1e-6)
        weights.append(lam)
    assert any(w < 1 for w in weights) and any(w == 1 for w in weights)  # mixed and, at prob < 1, unmixed views
    torch.testing.assert_close(augmented_views(x, idx, views, 5), got)  # the teacher's views are the student's


@pytest.mark.parametrize("mix", [MIXUP, CUTMIX])
def test_partners_weights_and_shares_follow_the_settings(mix):
    n = 20000
    partner, lam, box = mix_params(Views(0, mix=mix), 2, torch.arange(n), n, (32, 32))
    mixed = lam < 1
    assert abs(mixed.double().mean().item() - mix.prob) < 0.02
    assert len(set(partner.tolist())) > 0.6 * n and int(partner.max()) < n  # partners spread over the split
    if box is None:  # mixup: lam ~ Beta(alpha, alpha) on the mixed views, mean 1/2, variance 1/(4 (2 alpha + 1))
        w = lam[mixed]
        assert w.mean().item() == pytest.approx(0.5, abs=0.01)
        assert w.var().item() == pytest.approx(1 / (4 * (2 * mix.alpha + 1)), rel=0.05)
    else:  # CutMix at alpha 1: the box's share of the image is about uniform (less where the box is clipped)
        assert 0.3 < (1 - lam[mixed]).mean().item() < 0.5
    again = mix_params(Views(0, mix=mix), 2, torch.arange(n), n, (32, 32))
    assert torch.equal(again[0], partner) and torch.equal(again[1], lam)
    other = mix_params(Views(0, mix=mix), 3, torch.arange(n), n, (32, 32))
    assert not torch.equal(other[0], partner)  # another epoch, other partners


def test_the_table_holds_the_teacher_on_exactly_the_mixed_views(data, tmp_path):
    teacher = new_model(NETS, "teacher", 1, CPU).eval()
    study = Study(name="t", seed=5)
    ctx = StudyContext(study, data, Store(tmp_path), Views(5), NETS, lambda m: None)
    table = logit_table(ctx, teacher, "t", 2, "cutmix")
    plain = logit_table(ctx, teacher, "t", 2)
    idx = torch.randperm(len(data.train))[:50]  # another batch, in another order than the table's
    views = mix_views(Views(5), study.augment, "cutmix")
    assert views.mix == Mix("cutmix", 1.0, 0.5) and views == ctx.views_of("cutmix")
    again = predict(teacher, data.train.x[idx], lambda i: augmented_views(data.train.x, idx[i], views, 1))
    # the teacher's logits, float16-rounded: a batch of another order may round across a float16 step
    torch.testing.assert_close(table[1, idx], again.to(TABLE_DTYPE), rtol=1e-3, atol=1e-3)
    _, lam, _ = mix_params(views, 1, idx, len(data.train), data.image_size)
    changed = lam < 1
    assert changed.any() and not torch.allclose(table[1, idx[changed]], plain[1, idx[changed]])
    torch.testing.assert_close(table[1, idx[~changed]], plain[1, idx[~changed]])  # unmixed views: the plain ones


def test_the_hard_term_reads_the_mixed_labels():
    logits = torch.randn(6, 10)
    labels = MixedLabels(torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([9, 8, 7, 6, 4, 4]),
                         torch.tensor([1.0, 0.7, 0.5, 0.2, 0.9, 0.6]))
    probs = labels.probs(10)
    assert torch.allclose(probs.sum(1), torch.ones(6)) and probs[4, 4] == 1  # own and partner alike
    loss, _ = make_loss(Recipe(loss="ce"))(logits, probs)
    w = labels.weight
    by_hand = (w * F.cross_entropy(logits, labels.own, reduction="none")
               + (1 - w) * F.cross_entropy(logits, labels.partner, reduction="none")).mean()
    torch.testing.assert_close(loss, by_hand)
    teacher = torch.randn(6, 10, generator=torch.Generator().manual_seed(3))
    eps = 0.1  # smoothing spreads eps over the classes of the mixed target: (1 - eps) * probs + eps / classes
    _, parts = make_loss(Recipe(loss="kd", label_smoothing=eps))(logits, probs, teacher)
    target = (1 - eps) * probs + eps / 10
    torch.testing.assert_close(parts["hard"], -(target * F.log_softmax(logits, 1)).sum(1).mean())
    # DKD's target class is each view's heavier label (own at weight >= 0.5, the lower index at a tie of 0.5)
    heavier = torch.tensor([0, 1, 2, 6, 4, 5])
    _, mixed = make_loss(Recipe(loss="dkd"))(logits, probs, teacher)
    _, plain = make_loss(Recipe(loss="dkd"))(logits, heavier, teacher)
    torch.testing.assert_close(mixed["hard"], by_hand)
    torch.testing.assert_close((mixed["tckd"], mixed["nckd"]), (plain["tckd"], plain["nckd"]))
    _, own = make_loss(Recipe(loss="dkd"))(logits, labels.own, teacher)
    assert not torch.allclose(mixed["tckd"], own["tckd"])  # not the own labels: view 3's heavier label is its partner


def test_views_repeat_every_period_and_the_table_stays_that_long(data, tmp_path):
    x = images()
    idx = torch.arange(64)
    views = Views(1, period=3, mix=MIXUP)
    torch.testing.assert_close(augmented_views(x, idx, views, 7), augmented_views(x, idx, views, 1))
    assert not torch.equal(augmented_views(x, idx, views, 2), augmented_views(x, idx, views, 1))
    assert views.table_epochs(400) == 3 and Views(1).table_epochs(400) == 400
    teacher = new_model(NETS, "teacher", 1, CPU).eval()
    ctx = StudyContext(Study(name="t", seed=1), data, Store(tmp_path), Views(1, period=2), NETS, lambda m: None)
    table = logit_table(ctx, teacher, "t", 5, "mixup")
    assert table.shape == (2, len(data.train), 10)  # 2 rows serve 5 epochs
    lesson = Lesson(data.train, ctx.views_of("mixup"), data.val, table)
    recipe = Recipe(loss="kd", mix="mixup", epochs=5, batch_size=64)
    history = train(new_model(NETS, "student", 0, CPU), recipe, lesson, seed=0)
    assert len(history) == 5 and all(math.isfinite(h["train_loss"]) for h in history)
    # the same run on the unmixed views (the same table, period and seed): mixing changed what it trained on
    plain = train(new_model(NETS, "student", 0, CPU), dataclasses.replace(recipe, epochs=2),
                  dataclasses.replace(lesson, views=Views(1, period=2)), seed=0)
    assert all(a["train_loss"] != b["train_loss"] for a, b in zip(history, plain))
    with pytest.raises(ValueError, match="teacher logits for every epoch"):
        train(new_model(NETS, "student", 0, CPU), Recipe(loss="kd", epochs=3), Lesson(data.train, Views(1),
              data.val, table), seed=0)  # without the period, 3 epochs need 3 rows


def test_mix_and_period_are_in_the_keys_and_views_without_them_keep_theirs():
    assert Views(0).key == "views:0,4,True,0.4914,0.4822,0.4465,0.2023,0.1994,0.201"  # as stored runs have it
    keys = {Views(0).key, Views(0, mix=MIXUP).key, Views(0, mix=dataclasses.replace(MIXUP, alpha=0.2)).key,
            Views(0, mix=dataclasses.replace(MIXUP, prob=0.5)).key, Views(0, mix=CUTMIX).key,
            Views(0, period=10).key}
    assert len(keys) == 6
    assert key_fields(Recipe(mix="none")) == key_fields(Recipe()) != key_fields(Recipe(mix="cutmix"))


def test_a_study_mixes_by_its_augment_settings_and_has_a_table_per_mixing(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("name: s\naugment: {mixup: {alpha: 0.2}, period: 50}\n"
                     "baselines:\n  kd_reference: {mix: mixup}\nspace:\n  mix: {type: choice, values: [none, cutmix]}\n  epochs: {type: int, low: 10, high: 300}\n")
    s = load_study(study)
    assert s.augment.mixup.alpha == 0.2 and s.augment.mixup.prob == 1.0 and s.augment.cutmix.prob == 0.5
    assert logit_mixes(s) == ["mixup", "none", "cutmix"]
    for text, words in [("augment: {cutmix: {prob: 0}}", "augment.cutmix.prob: must be > 0"),
                        ("augment: {mixup: {alpha: -1}}", "augment.mixup.alpha: must be > 0"),
                        ("augment: {period: 0}", "augment.period: must be >= 1"),
                        ("space: {mix: {type: choice, values: [mixdown]}}", "space.mix.values: must be one of")]:
        study.write_text(f"name: s\n{text}\n")
        with pytest.raises(UserError, match=words):
            load_study(study)
