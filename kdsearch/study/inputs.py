"""A study's inputs in its study file: its two networks (`models`), its data and its views (`augment`). Part of
schema.py's schema, which holds the rest."""
from typing import Literal, Optional, Tuple

from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from kdsearch.study.validation import CONFIG, Float, Int, rule

Channels = Tuple[Float(ge=0, le=1), Float(ge=0, le=1), Float(ge=0, le=1)]


@dataclass(config=CONFIG)
class Models:
    """The study's two networks (networks.py): teacher, student (the notebook's), torchvision:NAME, timm:NAME,
    FILE.py:CALLABLE (relative to the study file's folder) or package.module:CALLABLE, called with num_classes."""
    teacher: str = Field("teacher", min_length=1, description="the teacher network's spec")
    student: str = Field("student", min_length=1, description="the student network's spec")


@dataclass(config=CONFIG)
class Data:
    source: Literal["auto", "cifar10", "imagefolder"] = Field(
        "auto", description="auto: an image-folder archive or folder is imagefolder, else cifar10")
    path: str = Field("data", description="a CIFAR-10 folder, or an image-folder archive or folder; --data overrides")
    val_size: Int(ge=1) = Field(5000, description="validation images carved from the training set (stratified)")
    train_subset: Optional[Int(ge=1)] = Field(None, description="train on a stratified subset of this size")
    image_size: Optional[Int(ge=1)] = Field(None, description="resize every image to SxS on decode (antialiased); "
                                            "null: the images' own size, which they must share")
    mean: Optional[Channels] = Field(None, description="per-channel mean (R, G, B in 0..1) for normalisation; "
                                     "null: the training split's own")
    std: Optional[Channels] = Field(None, description="per-channel std (R, G, B in 0..1); null: the training "
                                    "split's own")

    @field_validator("std")
    @classmethod
    def _positive(cls, std):
        if std is not None and min(std) <= 0:
            raise rule("", "must be > 0 in every channel", got=list(std))
        return std


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
    mixup: MixSetting = Field(default_factory=MixSetting, description="Zhang et al. 2018: alpha 1 on CIFAR-10")
    cutmix: MixSetting = Field(default_factory=lambda: MixSetting(1.0, 0.5),
                               description="Yun et al. 2019: alpha 1, prob 0.5 on CIFAR")
    period: Optional[Int(ge=1)] = Field(None, description="epoch e shows epoch e % period's views, so that the "
                                        "teacher's logit table holds `period` epochs however long the runs; null: "
                                        "every epoch its own views")
