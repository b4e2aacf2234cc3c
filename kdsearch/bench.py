"""`kdsearch bench`: the notebook's KD loop against kdsearch's KD and CE steps, in one process, on the same
images and batch size.

seed_loop_img_s: the notebook's loop: ImageFolder (or torchvision CIFAR10) with PIL transforms, a DataLoader
  with num_workers=0, the teacher run on every batch, the notebook's KD loss, Adam.
kd_img_s: kdsearch's KD step: batched augmentation on uint8 tensors, the teacher's logits read from the
  study's table (computed beforehand, once per study, and not timed here), the KD loss, Adam.
ce_img_s: the same step with CE alone and no teacher logits.
kdsearch's two steps are timed in alternating rounds so that machine noise hits both alike.
"""
import json
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import MEAN, STD, augmented_views
from .config import Recipe
from .data import is_archive, load_arrays, resolve_source
from .engine import to_split, make_optimizer, new_model, pick_device, set_threads, train_step
from .errors import UserError
from .losses import LOSSES
from .models import StudentNet, TeacherNet


def _extract_images(archive, n, out):
    """Extract about n train images, as many of each class, and one test image per class into folder `out`."""
    def members(tf):
        for m in tf:
            parts = Path(m.name).parts
            parts = parts[1:] if len(parts) == 4 else parts
            if m.isfile() and len(parts) == 3:
                yield m, parts

    with tarfile.open(archive) as tf:
        classes = {parts[1] for m, parts in members(tf) if parts[0] == "train"}
    per_class, counts = -(-n // max(len(classes), 1)), {}
    with tarfile.open(archive) as tf:
        for m, (split, cls, name) in members(tf):
            if counts.get((split, cls), 0) < (per_class if split == "train" else 1):
                counts[(split, cls)] = counts.get((split, cls), 0) + 1
                dest = out / split / cls / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tf.extractfile(m).read())


def _seed_dataset(source, path, n, tmp):
    """The notebook's dataset (PIL transforms) over n training images, and the same images as uint8 arrays."""
    import torchvision
    import torchvision.transforms as T
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    if source == "cifar10":
        arrays = load_arrays("cifar10", path)
        ds = torchvision.datasets.CIFAR10(root=str(path), train=True, download=False, transform=transform)
        return torch.utils.data.Subset(ds, range(n)), arrays.train_x[:n], arrays.train_y[:n]
    folder = Path(path)
    if is_archive(path):
        folder = Path(tmp)
        _extract_images(path, n, folder)
    elif not (folder / "train").is_dir():
        folder = next(d for d in folder.iterdir() if (d / "train").is_dir())
    ds = torchvision.datasets.ImageFolder(str(folder / "train"), transform=transform)
    arrays = load_arrays("imagefolder", folder)  # the same files, decoded by kdsearch
    n = min(n, len(ds))
    return torch.utils.data.Subset(ds, range(n)), arrays.train_x[:n], arrays.train_y[:n]


class NotebookStudentNet(StudentNet):
    """StudentNet with the notebook's own forward (pool after ReLU, view): the seed loop runs it as it was."""

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


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


def kdsearch_steps(split, logits, batches, batch_size, rounds=3):
    """Images per second of kdsearch's KD step and CE step, timed in alternating rounds."""
    kd, ce = Recipe(loss="kd"), Recipe(loss="ce")
    n = len(split)
    runs = {}
    for name, recipe in (("kd", kd), ("ce", ce)):
        model = new_model("student", 10, 0, split.x.device)
        runs[name] = (model, make_optimizer(model, recipe), recipe)
    elapsed, seen = {"kd": 0.0, "ce": 0.0}, {"kd": 0, "ce": 0}

    def one_round(name, timed):
        model, opt, recipe = runs[name]
        model.train()
        start = time.perf_counter()
        for b in range(batches):
            idx = torch.arange(b * batch_size, min((b + 1) * batch_size, n), device=split.x.device)
            x = augmented_views(split.x, idx, 0, 0)
            t = logits[0, idx] if name == "kd" else None
            loss = train_step(model, opt, LOSSES[recipe.loss], recipe, x, split.y[idx], t)
        loss.item()  # wait for the device
        if timed:
            elapsed[name] += time.perf_counter() - start
            seen[name] += n

    for name in runs:
        one_round(name, timed=False)
    for _ in range(rounds):
        for name in runs:
            one_round(name, timed=True)
    return seen["kd"] / elapsed["kd"], seen["ce"] / elapsed["ce"]


def run_bench(path="data", source="auto", batches=20, batch_size=256, threads=0, log=print):
    threads = set_threads(threads)
    device = pick_device()
    path = Path(path).expanduser()
    source = resolve_source(source, path)
    if source == "imagefolder" and not path.exists():
        raise UserError(f"data path {path} does not exist; fix: give --data an image-folder archive or folder")
    n = batches * batch_size
    with tempfile.TemporaryDirectory(prefix="kdsearch-bench-") as tmp:
        ds, x, y = _seed_dataset(source, path, n + batch_size, tmp)  # one extra batch to warm up the seed loop
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0,
                                             pin_memory=device.type == "cuda")
        log(f"bench: {min(n, len(x))} images, batch {batch_size}, {device}, {threads} CPU threads")
        seed = seed_loop(loader, device, batches)
    split = to_split(x[:n], y[:n], device)
    logits = torch.randn(1, len(split), 10, device=device)  # any table will do: a KD step reads, never computes it
    kd, ce = kdsearch_steps(split, logits, -(-len(split) // batch_size), batch_size)
    return {"seed_loop_img_s": round(seed, 1), "kd_img_s": round(kd, 1), "ce_img_s": round(ce, 1)}


def format_bench(r):
    return (f"seed_loop_img_s {r['seed_loop_img_s']:>9.1f}   the notebook's KD loop\n"
            f"kd_img_s        {r['kd_img_s']:>9.1f}   kdsearch KD step   (kd / seed_loop = "
            f"{r['kd_img_s'] / r['seed_loop_img_s']:.2f}x)\n"
            f"ce_img_s        {r['ce_img_s']:>9.1f}   kdsearch CE step   (ce / kd = {r['ce_img_s'] / r['kd_img_s']:.3f})")


def write_json(result, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
