"""`kdsearch export`: a search's best student as a file that loads without kdsearch.

A finished search saves kd_best's student as <results>/<name>/student.pt: its weights, its network (networks.py's
record), its class names and the normalisation it was trained with (plain types, so torch.load's weights_only
reads it). `export` turns it into
- pt2: torch.export's program (`torch.export.load(FILE).module()`), the normalisation folded in: it takes float
  RGB images with values in 0..1, (N, 3, H, W) for any N, and returns the logits;
- onnx: the same graph as ONNX (the optional extra `pip install -e '.[onnx]'`: onnx and onnxscript);
- state_dict: the weights, the network's spec (and its record: a file's absolute path, callable and hash) and
  the normalisation, for a user who builds the network.
FILE.json beside it says what the model takes and gives: its input size and range, whether the normalisation is
folded in, the mean and std, and the classes in logit order.
"""
import dataclasses
import json
from pathlib import Path

import torch

from kdsearch.core.errors import UserError, first_line
from kdsearch.engine.networks import Network, logits_of

STUDENT = "student.pt"
FORMATS = {"pt2": ".pt2", "onnx": ".onnx", "state_dict": ".pt"}


def save_student(folder, model, network, data, views):
    """kd_best's student (`model`, of networks.Network `network`), as `export` reads it: <folder>/student.pt,
    with the study data's (a dataset.StudyData's) image size and classes and the views' normalisation."""
    image_size, classes = views.size or data.image_size, data.classes  # the views' size: what the network takes
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "network": dataclasses.asdict(network), "image_size": list(image_size), "classes": list(classes),
                "mean": list(views.mean), "std": list(views.std)}, Path(folder) / STUDENT)


class Normalized(torch.nn.Module):
    """A student that takes images in 0..1 and returns its logits: the study's normalisation folded in."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return logits_of(self.model((x - self.mean) / self.std))


_BATCH = {"x": {0: torch.export.Dim("batch", min=1, max=1 << 16)}}  # any batch size


def deployable(model, mean, std, image_size):
    """The torch.export program of a student with its normalisation (`mean`, `std`) folded in, taking float
    images in 0..1 of `image_size` at any batch size, on the student's device: what pt2 holds, and what a
    student's latency is measured on (engine/cost.py)."""
    device = next(model.parameters()).device
    wrapped = Normalized(model, mean, std).to(device).eval()
    return torch.export.export(wrapped, (torch.rand(2, 3, *image_size, device=device),), dynamic_shapes=_BATCH)


def load_student(folder):
    """(the student network in eval mode on the CPU, the saved record) of a finished search's folder."""
    path = Path(folder) / STUDENT
    if not path.is_file():
        raise UserError(f"{folder}: no {STUDENT} (a finished search writes it; older ones did not); fix: give "
                        f"<results>/<name> of a finished search, or run the search again")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    network = Network(**saved["network"])
    try:
        # the architecture alone: the saved weights replace any starting weights (an init file need not be here)
        model = network.architecture(len(saved["classes"]), tuple(saved["image_size"]))
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, OSError, ImportError, AttributeError, UserError) as e:  # a moved or edited network file
        raise UserError(f"{path}: its network {network.spec} ({network.name}) cannot be built with these weights "
                        f"({first_line(e, 160)}); fix: restore the network's file as the search used it") from None
    return model.float().eval(), saved


def student_folder(folder, spec=None):
    """Where a search's student `spec` (None: the search's own, the recommended one of several) is saved: the
    search's folder, or students/<label>/ in it."""
    if spec is None:
        return Path(folder)
    from kdsearch.study.inputs import student_subfolder
    sub = Path(folder) / student_subfolder(spec)
    if not (sub / STUDENT).is_file():
        try:
            specs = [e["spec"] for e in json.loads((Path(folder) / "report.json").read_text()).get("students") or ()]
        except (OSError, ValueError):
            specs = []
        raise UserError(f"{folder}: the search has no student {spec!r}; fix: "
                        + (f"name one of {', '.join(specs)}" if specs else "leave --student out: it searched one"))
    return sub


def export(folder, fmt="pt2", out=None, student=None):
    """Write the student of the search in `folder` (student: the spec of one of its several; None: the
    recommended one) as `fmt` (pt2, onnx or state_dict) to `out` (default: <its folder>/student<suffix>), with
    its description beside it as <out>.json; returns the path written."""
    folder = student_folder(folder, student)
    model, saved = load_student(folder)
    out = Path(out) if out else Path(folder) / f"student{FORMATS[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = saved["image_size"]
    folded = fmt != "state_dict"
    about = {"format": fmt, "network": saved["network"]["spec"], "classes": saved["classes"],
             "input": {"shape": ["N", 3, h, w], "dtype": "float32", "channels": "RGB",
                       "range": "0..1" if folded else "normalised: (x - mean) / std, x in 0..1"},
             "normalisation_folded_in": folded, "mean": saved["mean"], "std": saved["std"], "output": "logits"}
    if fmt == "state_dict":
        # the spec as the study named it, and its record (a file's absolute path, callable and content hash)
        torch.save({"state_dict": saved["state_dict"], "network": saved["network"]["spec"],
                    "network_record": saved["network"], "num_classes": len(saved["classes"]),
                    **{k: saved[k] for k in ("image_size", "classes", "mean", "std")}}, out)
    elif fmt == "pt2":
        torch.export.save(deployable(model, saved["mean"], saved["std"], (h, w)), out)
    else:
        _check_onnx()
        torch.onnx.export(Normalized(model, saved["mean"], saved["std"]).eval(), (torch.rand(2, 3, h, w),), str(out),
                          input_names=["x"], output_names=["logits"], dynamic_shapes=_BATCH, dynamo=True,
                          external_data=False)  # one file
    Path(f"{out}.json").write_text(json.dumps(about, indent=1))
    return out


def _check_onnx():
    import importlib.util
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"--format onnx needs the {' and '.join(missing)} package(s), not installed here; fix: "
                        f"pip install -e '.[onnx]', or use --format pt2")
