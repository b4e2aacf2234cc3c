"""Issue 9's engine part on a GPU, without Ray (the device has none): the full study's baselines, then the
confirmation runs kdsearch's confirm stage would make, run one after another in this process through the same
trial function (kd_trial): student_ce and kd_reference on seeds 1 and 2 (seed 0 is the baselines' own run), and
one searched-looking configuration (KD T 8, alpha 0.1, 30 epochs: the stack notes' good point) on seeds 0, 1, 2.
Test accuracy of each model once, at the end. Writes $OUT/confirm-gpu.json."""
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


def nhwc(split):
    return split.x.permute(0, 2, 3, 1).contiguous().cpu().numpy(), split.y.cpu().numpy()


(tx, ty), (vx, vy) = nhwc(data.train), nhwc(data.val)
args = dict(train_x=tx, train_y=ty, val_x=vx, val_y=vy, logits=table.cpu().numpy(), threads=4, device="cuda",
            num_classes=len(data.classes))
kd_ref = dataclasses.asdict(study.baselines.kd_reference)
plan = [("student_ce", dataclasses.asdict(study.baselines.student_ce), [1, 2]),
        ("kd_reference", kd_ref, [1, 2]),
        ("kd_T8_a0.1", {**kd_ref, "temperature": 8.0, "alpha": 0.1}, [0, 1, 2])]
results = {r["model"]: {"seeds": [0], "val": [r["val_acc"]], "test": [r["test_acc"]], "train_s": [r["train_s"]]}
           for r in rows}
models = []
for name, recipe, seeds in plan:
    entry = results.setdefault(name, {"seeds": [], "val": [], "test": [], "train_s": []})
    for s in seeds:
        start = time.time()
        history, model = kd_trial({}, base=recipe, seed=s, view_seed=study.seed, **args)
        entry["seeds"].append(s)
        entry["val"].append(history[-1]["val_acc"])
        entry["train_s"].append(time.time() - start)
        models.append((entry, model))
        print(f"{name} seed {s}: val {history[-1]['val_acc']:.2f}% in {time.time() - start:.1f} s", flush=True)
for entry, model in models:  # test accuracy once per model, at the end
    entry["test"].append(evaluate(model, data.test))
evidence = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "python": sys.version.split()[0],
            "engine_s": engine_s, "total_s": time.time() - t0, "view_seed": study.seed,
            "note": "seed 0 of student_ce and kd_reference is the baselines' run; other runs via kdsearch.trial.kd_trial"}
json.dump({"evidence": evidence, "results": results}, open(os.path.join(out, "confirm-gpu.json"), "w"), indent=1)
print(json.dumps(results, indent=0))
