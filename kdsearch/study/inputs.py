"""A study's inputs in its study file: its two networks (`models`), its data and its views (`augment`). Part of
schema.py's schema, which holds the rest."""
import re
from pathlib import PurePosixPath
from typing import Annotated, List, Literal, Optional, Tuple, Union

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag, model_validator
from pydantic.dataclasses import dataclass

from kdsearch.study.validation import CONFIG, MANY, ONE, Float, Int, rule

Channels = Tuple[Float(ge=0, le=1), Float(ge=0, le=1), Float(ge=0, le=1)]


def _positive(std):
    if min(std) <= 0:
        raise rule("", "must be > 0 in every channel", got=list(std))
    return std


Std = Annotated[Channels, AfterValidator(_positive)]  # a per-channel std: R, G, B, each > 0


@dataclass(config=CONFIG)
class NetworkEntry:
    """One network of the study: its spec and where its weights start. A plain spec string is this with the rest
    left out: random initialisation, normalised by the data's own statistics."""
    spec: str = Field(min_length=1, description="teacher, student (the notebook's), torchvision:NAME, timm:NAME, "
                      "FILE.py:CALLABLE or package.module:CALLABLE")
    weights: Optional[str] = Field(None, description="pretrained weights as the library names them: a torchvision "
                                   "weights name (IMAGENET1K_V1) or DEFAULT; for timm, pretrained. A head of another "
                                   "class count is built fresh, the rest loaded; read from torch's hub cache")
    init: Optional[str] = Field(None, description="a state_dict file (.pt) to start from, then trained by the recipe "
                                "(a path relative to the study file); a head of another class count is built fresh")
    mean: Optional[Channels] = Field(None, description="the normalisation these weights were trained under (R, G, B "
                                     "in 0..1); null: the weights' own, else the data's")
    std: Optional[Std] = Field(None, description="the std beside mean")


def _entry(value):
    return {"spec": value} if isinstance(value, str) else value  # a plain spec: the entry with its spec alone


Network = Annotated[NetworkEntry, BeforeValidator(_entry)]


@dataclass(config=CONFIG)
class Models:
    """The study's two networks (networks.py): teacher, student (the notebook's), torchvision:NAME, timm:NAME,
    FILE.py:CALLABLE (relative to the study file's folder) or package.module:CALLABLE, called with num_classes;
    or a mapping with that `spec` and its starting weights (`weights`, `init`) and their normalisation."""
    teacher: Network = Field(default_factory=lambda: NetworkEntry("teacher"), description="the teacher network: "
                             "a spec, or {spec, weights, init, mean, std}")
    student: Annotated[Union[Annotated[Network, Tag(ONE)], Annotated[List[Network], Tag(MANY)]],
                       Discriminator(lambda v: MANY if isinstance(v, list) else ONE)] = Field(
        default_factory=lambda: NetworkEntry("student"), description="the student network: a spec, or {spec, "
        "weights, init, mean, std}; or a list of them: several students, each searched with the same budget, "
        "sharing the teacher and its logit tables, and the report's front of accuracy against latency")

    @model_validator(mode="after")
    def _students_differ(self):
        if isinstance(self.student, list):
            if not self.student:
                raise rule("student", "names no student", "give at least one network in {where}")
            specs = [e.spec for e in self.student]
            twice = next((s for s in specs if specs.count(s) > 1), None)
            if twice is not None:
                raise rule("student", f"names {twice!r} twice (a student is named by its spec)",
                           "remove one of them from {where}")
            labels = [student_label(s) for s in specs]
            clash = next((s for s, label in zip(specs, labels) if labels.count(label) > 1), None)
            if clash is not None:
                raise rule("student", f"{clash!r} and another spec give the same folder name "
                           f"{student_label(clash)!r}", "rename one network's file or callable in {where}")
        return self

    @property
    def students(self):
        """The study's students, a list even when the file names one."""
        return self.student if isinstance(self.student, list) else [self.student]


def student_label(spec):
    """A student's name in folders, Tune's and MLflow's names: its spec with every character but letters, digits,
    '_' and '-' made '_' (torchvision:mobilenet_v3_small -> torchvision_mobilenet_v3_small; MLflow's logged
    models take no '.', ':' or '/')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", spec)


def student_subfolder(spec):
    """Where the files of one of several students go in a study's or search's folder: students/<label>."""
    return PurePosixPath("students", student_label(spec))


@dataclass(config=CONFIG)
class Data:
    source: Literal["auto", "cifar10", "imagefolder"] = Field(
        "auto", description="auto: an image-folder archive or folder is imagefolder, else cifar10")
    path: str = Field("data", description="a CIFAR-10 folder, or an image-folder archive or folder; --data overrides")
    val_size: Int(ge=1) = Field(5000, description="validation images carved from the training set (stratified)")
    train_subset: Optional[Int(ge=1)] = Field(None, description="train on a stratified subset of this size")
    image_size: Optional[Int(ge=1)] = Field(None, description="resize every image to SxS on decode (antialiased); "
                                            "null: the images' own size, which they must share")
    stored_size: Optional[Int(ge=1)] = Field(None, description="with image_size: hold the images at SxS (e.g. 1.14 x "
                                             "image_size) and crop the image_size views from them (training: the "
                                             "augment.crop, evaluation: the centre); null: held at image_size")
    mean: Optional[Channels] = Field(None, description="per-channel mean (R, G, B in 0..1) for normalisation; "
                                     "null: the training split's own")
    std: Optional[Std] = Field(None, description="per-channel std (R, G, B in 0..1); null: the training "
                                    "split's own")

    @model_validator(mode="after")
    def _stored_holds_the_view(self):
        if self.stored_size is not None and (self.image_size is None or self.stored_size < self.image_size):
            raise rule("stored_size", "needs data.image_size, the views' size, and must be at least it",
                       "set data.image_size to the views' size and {key} to at least it in {where}",
                       got=self.stored_size)
        return self


@dataclass(config=CONFIG)
class MixSetting:
    """How a recipe's mix mixes: the weight lam ~ Beta(alpha, alpha), with probability prob per view."""
    alpha: Float(gt=0) = Field(1.0, description="Beta(alpha, alpha) of the mixing weight")
    prob: Float(gt=0, le=1) = Field(1.0, description="the share of views mixed")


@dataclass(config=CONFIG)
class Augment:
    """The training views: a random crop of the image's size from the zero-padded image, a horizontal flip, and
    for a recipe with `mix`, mixup's or CutMix's settings (the papers' CIFAR values by default)."""
    crop_padding: Optional[Int(ge=0)] = Field(None, description="the crop's zero padding in pixels; null: 1/8 of "
                                              "the image's smaller side (4 at 32x32)")
    flip: bool = Field(True, description="random horizontal flips (false for digits or text)")
    crop: Literal["pad", "resized"] = Field("pad", description="pad: a random crop of the zero-padded image (CIFAR's); "
                                            "resized: RandomResizedCrop's box of `scale` of the area at an aspect "
                                            "ratio in `ratio`, resized to the view's size (ImageNet's)")
    scale: Tuple[Float(gt=0, le=1), Float(gt=0, le=1)] = Field((0.08, 1.0), description="resized: the box's share "
                                                               "of the image's area, low and high")
    ratio: Tuple[Float(gt=0), Float(gt=0)] = Field((3 / 4, 4 / 3), description="resized: the box's aspect ratio "
                                                   "(width / height), low and high, drawn log-uniformly")

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("scale", "ratio"):
            low, high = getattr(self, name)
            if low > high:
                raise rule(name, "must be [low, high] with low <= high", got=[low, high])
        return self
    mixup: MixSetting = Field(default_factory=MixSetting, description="Zhang et al. 2018: alpha 1 on CIFAR-10")
    cutmix: MixSetting = Field(default_factory=lambda: MixSetting(1.0, 0.5),
                               description="Yun et al. 2019: alpha 1, prob 0.5 on CIFAR")
    period: Optional[Int(ge=1)] = Field(None, description="epoch e shows epoch e % period's views, so that the "
                                        "teacher's logit table holds `period` epochs however long the runs; null: "
                                        "every epoch its own views")
