"""Issue 11 on a GPU, without Ray (the device has none): the full study's engine (cifar10_kd.yaml: teacher,
baselines, logit table), then each distillation-loss family at its paper's defaults for kd_reference's 30 epochs,
through the trial function (kd_trial) with the study's views and logit table, seeds 0 and 1. Test accuracy once
per model, at the end. Writes $OUT/families-gpu.json."""
import dataclasses
import json
import os
import sys
import time

import torch

from kdsearch.baselines import open_study, run_baselines
from kdsearch.config import load_study
from kdsearch.engine import evaluate, pick_device
from kdsearch.trial import kd_trial

data_path, out = sys.argv[1], os.environ["OUT"]
study = load_study("search_spaces/cifar10_kd.yaml", {"data.path": data_path, "data.source": "auto"})
device = pick_device(study.device)
t0 = time.time()
data, store = open_study(study.data, study.seed, study.threads, device, "/tmp/results")
rows, table = run_baselines(study.teacher, study.baselines, study.space, study.seed, data, store, need_table=True)
engine_s = time.time() - t0
x, y = data.train.x.permute(0, 2, 3, 1).contiguous().cpu().numpy(), data.train.y.cpu().numpy()
vx, vy = data.val.x.permute(0, 2, 3, 1).contiguous().cpu().numpy(), data.val.y.cpu().numpy()
args = dict(train_x=x, train_y=y, val_x=vx, val_y=vy, logits=table.cpu().numpy(), threads=4, device="cuda",
            num_classes=len(data.classes))
kd_ref = dataclasses.asdict(study.baselines.kd_reference)  # Adam 1e-3, 30 epochs, batch 256
defaults = {"kd_ls": {"loss": "kd_ls", "temperature": 2.0, "alpha": 0.1},  # T 2, distillation 9 : CE 1
            "dkd": {"loss": "dkd", "temperature": 4.0, "alpha": 0.5, "beta": 8.0},  # CE 1, TCKD 1, NCKD 8
            "dist": {"loss": "dist", "temperature": 1.0, "alpha": 0.5, "beta": 1.0, "gamma": 1.0}}
results = {r["model"]: {"config": r["config"], "seeds": [0], "val": [r["val_acc"]], "test": [r["test_acc"]],
                        "train_s": [r["train_s"]]} for r in rows}
models = []
for name, change in defaults.items():
    recipe = {**kd_ref, **change}
    entry = results.setdefault(name, {"config": recipe, "seeds": [], "val": [], "test": [], "train_s": []})
    for seed in (0, 1):
        start = time.time()
        history, model = kd_trial({}, base=recipe, seed=seed, view_seed=study.seed, **args)
        entry["seeds"].append(seed)
        entry["val"].append(history[-1]["val_acc"])
        entry["train_s"].append(time.time() - start)
        entry.setdefault("last_epoch", []).append(history[-1])
        models.append((entry, model))
        print(f"{name} seed {seed}: val {history[-1]['val_acc']:.2f}% in {time.time() - start:.1f} s", flush=True)
for entry, model in models:  # test accuracy once per model, at the end, for the report only
    entry["test"].append(evaluate(model, data.test))
evidence = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "python": sys.version.split()[0],
            "engine_s": engine_s, "total_s": time.time() - t0, "view_seed": study.seed, "repeats": "seeds 0 and 1",
            "note": "teacher and baselines (seed 0) from kdsearch's engine; the families via kdsearch.trial.kd_trial"}
json.dump({"evidence": evidence, "results": results}, open(os.path.join(out, "families-gpu.json"), "w"), indent=1)
for name, e in results.items():
    print(f"{name:14s} val {e['val']} test {[round(t, 2) for t in e['test']]}")
