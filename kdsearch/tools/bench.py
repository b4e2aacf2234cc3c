"""`kdsearch bench`: training-step throughput of the notebook's KD loop against kdsearch's steps, with evidence.

All figures are measured in one process, on the same images and batch size; the evidence header gives the
hardware, versions, sizes and repeats.

seed_loop_img_s: the notebook's loop: ImageFolder (or torchvision CIFAR10) with PIL transforms, a DataLoader
  with num_workers=0, the teacher run on every batch, the notebook's KD loss, Adam, the notebook's StudentNet.
kd_img_s: kdsearch's KD step: a random permutation's batch of uint8 images gathered, augmented and normalised
  on the device, the teacher's logits read from a table (here random numbers: a KD step reads the table, it
  never computes it), the KD loss, Adam.
ce_img_s: the same step with CE alone and no teacher logits.
kd_notebook_relu_img_s: the KD step with the notebook's layer order in StudentNet (ReLU before max-pooling).
teacher_logits_img_s: the pass that fills the logit table: the teacher in eval mode on augmented views.
views_pad_img_s, views_resized_img_s: the views alone, per image: the padded crop and flip (CIFAR's), and
  RandomResizedCrop's box resized to the images' own size and flipped (augment.crop: resized), both normalised.
kd_trial_img_s: a KD trial's whole cost per trained image, its step plus its share of the logit table when a
  study of N trials shares one table: 1 / (1 / kd_img_s + 1 / (N * teacher_logits_img_s)), for N = 1 and 20.
kdsearch's steps are timed in alternating rounds (`repeats` of them) so that machine noise hits all alike.
"""
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdsearch.data import imagefolder
from kdsearch.data.augment import MEAN, STD, Views, augmented_views
from kdsearch.data.dataset import check_source, load_arrays, to_split
from kdsearch.engine.levers import make_optimizer
from kdsearch.engine.loop import new_model, pick_device, predict, set_threads, train_step
from kdsearch.engine.losses import make_loss
from kdsearch.engine.models import StudentNet, TeacherNet
from kdsearch.engine.networks import notebook_networks
from kdsearch.study.schema import Recipe
from kdsearch.tools.evidence import evidence

VIEWS = Views(0)  # the notebook's crop, flip and CIFAR-10 normalisation, as its own loop here

STUDY_SIZES = (1, 20)  # trials sharing one logit table, for kd_trial_img_s


class NotebookStudentNet(StudentNet):
    """StudentNet with the notebook's own forward (ReLU before pooling, view): the seed loop runs it as it was."""

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc2(F.relu(self.fc1(x.reshape(x.size(0), -1))))


def _seed_dataset(source, path, n, tmp):
    """The notebook's dataset (PIL transforms) over n training images, and the same images as uint8 arrays."""
    import torchvision
    import torchvision.transforms as T
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    if source == "cifar10":
        arrays = load_arrays("cifar10", path)
        ds = torchvision.datasets.CIFAR10(root=str(path), train=True, download=False, transform=transform)
        return torch.utils.data.Subset(ds, range(n)), arrays.train_x[:n], arrays.train_y[:n]
    folder = Path(tmp)  # the first n/10 images of each class (and one test image each), as files: the bench's
    files = imagefolder.read_files(path, limit={"train": -(-n // 10), "test": 1})  # models have 10 classes
    for (split, cls), items in files.items():
        (folder / split / cls).mkdir(parents=True, exist_ok=True)
        for name, blob in items:
            (folder / split / cls / Path(name).name).write_bytes(blob)
    ds = torchvision.datasets.ImageFolder(str(folder / "train"), transform=transform)
    arrays = load_arrays("imagefolder", folder)  # the same files, decoded by kdsearch
    n = min(n, len(ds))
    return torch.utils.data.Subset(ds, range(n)), arrays.train_x[:n], arrays.train_y[:n]


def seed_loop(loader, device, batches, T=4.5, alpha=0.8):
    """The notebook's train_student_kd inner loop, verbatim in substance; returns images per second."""
    teacher, student = TeacherNet().to(device).eval(), NotebookStudentNet().to(device)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    ce_loss_fn, kd_loss_fn = nn.CrossEntropyLoss(), nn.KLDivLoss(reduction="batchmean")
    seen, start = 0, None
    for b, (inputs, targets) in enumerate(loader):
        if b == 1:  # the first batch warms up
            start, seen = time.perf_counter(), 0
        if b > batches:
            break
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        with torch.no_grad():
            teacher_soft = F.softmax(teacher(inputs) / T, dim=1)
        outputs = student(inputs)
        loss = alpha * ce_loss_fn(outputs, targets) + (1 - alpha) * T * T * kd_loss_fn(
            F.log_softmax(outputs / T, dim=1), teacher_soft)
        loss.backward()
        optimizer.step()
        loss.item()
        seen += len(inputs)
    return seen / (time.perf_counter() - start)


def kdsearch_steps(split, logits, batch_size, repeats):
    """Images per second of kdsearch's KD step, CE step and KD step with the notebook's ReLU order, each round
    one pass over `split` in a random permutation's batches, timed in alternating rounds."""
    device, n = split.x.device, len(split)
    runs = {}
    for name, loss, model_cls in (("kd", "kd", StudentNet), ("ce", "ce", StudentNet),
                                  ("kd_notebook_relu", "kd", NotebookStudentNet)):
        torch.manual_seed(0)
        model = model_cls().to(device, memory_format=torch.channels_last)
        recipe = Recipe(loss=loss)
        runs[name] = (model, make_optimizer(model, recipe), make_loss(recipe), loss == "kd")
    elapsed, seen = dict.fromkeys(runs, 0.0), dict.fromkeys(runs, 0)
    order = torch.Generator().manual_seed(0)

    def one_round(name, timed):
        model, opt, loss_fn, reads_table = runs[name]
        model.train()
        perm = torch.randperm(n, generator=order).to(device)
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x = augmented_views(split.x, idx, VIEWS, 0)
            loss, _ = train_step(model, opt, loss_fn, x, split.y[idx], logits[0, idx] if reads_table else None)
        loss.item()  # wait for the device
        if timed:
            elapsed[name] += time.perf_counter() - start
            seen[name] += n

    for name in runs:
        one_round(name, timed=False)  # warm-up
    for _ in range(repeats):
        for name in runs:
            one_round(name, timed=True)
    return {f"{name}_img_s": seen[name] / elapsed[name] for name in runs}


def teacher_pass(split, device):
    """Images per second of the logit-table pass: the teacher (eval, no grad) on one epoch's augmented views."""
    teacher = new_model(notebook_networks(), "teacher", 0, device)
    predict(teacher, split.x[:1024], lambda idx: augmented_views(split.x, idx, VIEWS, 0))  # warm-up
    start = time.perf_counter()
    predict(teacher, split.x, lambda idx: augmented_views(split.x, idx, VIEWS, 1)).sum().item()
    return len(split) / (time.perf_counter() - start)


def view_costs(split, batch_size, repeats):
    """Images per second of the padded and of the resized-crop views of the split, in alternating rounds."""
    kinds = {"views_pad_img_s": VIEWS, "views_resized_img_s": Views(0, crop="resized")}
    elapsed = dict.fromkeys(kinds, 0.0)
    for _ in range(repeats):
        for name, views in kinds.items():
            start = time.perf_counter()
            for i in range(0, len(split), batch_size):
                augmented_views(split.x, torch.arange(i, min(i + batch_size, len(split))), views, 1).sum().item()
            elapsed[name] += time.perf_counter() - start
    return {name: repeats * len(split) / s for name, s in elapsed.items()}


def run_bench(path="data", source="auto", batches=20, batch_size=256, threads=0, repeats=3, log=print):
    threads = set_threads(threads)
    device = pick_device()
    path = Path(path).expanduser()
    source = check_source(source, path)
    n = batches * batch_size
    with tempfile.TemporaryDirectory(prefix="kdsearch-bench-") as tmp:
        ds, x, y = _seed_dataset(source, path, n + batch_size, tmp)  # one extra batch to warm up the seed loop
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0,
                                             pin_memory=device.type == "cuda")
        log(f"bench: {min(n, len(x))} images, batch {batch_size}, {device}, {threads} CPU threads")
        seed = seed_loop(loader, device, batches)
    split = to_split(x[:n], y[:n], device)
    logits = torch.randn(1, len(split), 10, device=device)  # any table will do: a KD step reads, never computes it
    steps = kdsearch_steps(split, logits, batch_size, repeats)
    teacher = teacher_pass(split, device)
    result = {"seed_loop_img_s": seed, **steps, "teacher_logits_img_s": teacher,
              **view_costs(split, batch_size, repeats)}
    for trials in STUDY_SIZES:
        result[f"kd_trial_img_s_n{trials}"] = 1 / (1 / steps["kd_img_s"] + 1 / (trials * teacher))
    result = {k: round(v, 1) for k, v in result.items()}
    assert all(math.isfinite(v) and v > 0 for v in result.values())
    result["evidence"] = {**evidence(device, threads), "batch_size": batch_size,
                          "batches": -(-len(split) // batch_size), "repeats": repeats}
    return result


def format_bench(r):
    """The figures, with ratios computed from the figures as printed."""
    kd, seed, ce, relu = r["kd_img_s"], r["seed_loop_img_s"], r["ce_img_s"], r["kd_notebook_relu_img_s"]
    lines = [
        f"seed_loop_img_s        {seed:>10.1f}   the notebook's KD loop (PIL, DataLoader, teacher per batch)",
        f"kd_img_s               {kd:>10.1f}   kdsearch KD step; training-step throughput: kd / seed_loop = "
        f"{kd / seed:.2f}x",
        f"ce_img_s               {ce:>10.1f}   kdsearch CE step (ce / kd = {ce / kd:.3f})",
        f"kd_notebook_relu_img_s {relu:>10.1f}   KD step, notebook's ReLU-before-pool student (kd / this = "
        f"{kd / relu:.2f}x)",
        f"teacher_logits_img_s   {r['teacher_logits_img_s']:>10.1f}   teacher pass filling the logit table",
        f"views_pad_img_s        {r['views_pad_img_s']:>10.1f}   the views alone: padded crop and flip",
        f"views_resized_img_s    {r['views_resized_img_s']:>10.1f}   the views alone: resized crop and flip (pad / "
        f"this = {r['views_pad_img_s'] / r['views_resized_img_s']:.2f}x)",
    ]
    lines += [f"kd_trial_img_s_n{n:<6} {r[f'kd_trial_img_s_n{n}']:>10.1f}   a KD trial's whole cost per image, with "
              f"1/{n} of the logit table's pass" for n in STUDY_SIZES]
    e = r["evidence"]
    lines.append(f"evidence: {e['device']}; torch {e['torch']}; {e['cpu_threads']} CPU threads; batch {e['batch_size']} "
                 f"x {e['batches']} batches, {e['repeats']} repeats; kdsearch {e['kdsearch']} "
                 f"({e['git_commit'] or 'no git commit'}); {e['date']}")
    return "\n".join(lines)


def write_json(result, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
