"""How a study runs, in its study file: the search, the confirmation, each trial's resources and the MLflow
tracking. Part of schema.py's schema, which holds the rest."""
from typing import Literal, Optional

from pydantic import Field, StrictBool
from pydantic.dataclasses import dataclass

from kdsearch.study.validation import CONFIG, Float, Int


@dataclass(config=CONFIG)
class Search:
    num_samples: Int(ge=1) = Field(20, description="trials; --num-samples overrides")
    max_concurrent: Int(ge=1) = Field(2, description="trials running at once")
    seed: Int(ge=0) = Field(0, description="seeds Optuna's sampler (TPE)")
    scheduler: Literal["none", "asha"] = Field("none", description="asha: stop poor trials early")
    grace_period: Int(ge=1) = Field(2, description="ASHA: epochs every trial runs before it may be stopped")
    reduction_factor: Int(ge=2) = Field(3, description="ASHA: keep the best 1/reduction_factor at each rung")
    max_failures: Int(ge=0) = Field(2, description="a trial that raises is retried from its checkpoint this often")
    stop_at_chance: StrictBool = Field(True, description="a teacher no better than chance on validation stops the "
                                       "search after the engine phase (distilling it can only teach noise); false: "
                                       "search anyway")
    control: StrictBool = Field(True, description="the control arm: a CE student searched beside the KD search with "
                                "the same searcher, trials and scheduler over the space's recipe values (all but "
                                "the distillation values), so the verdict says whether distillation or the tuning "
                                "gained; --no-control turns it off")


@dataclass(config=CONFIG)
class Confirm:
    """After the search: the best configurations and the CE / KD baselines re-trained on more seeds."""
    top_k: Int(ge=1) = Field(3, description="best completed configurations to confirm")
    seeds: Int(ge=1) = Field(3, description="seeds per confirmed model, the study's seed first; 1: off")


@dataclass(config=CONFIG)
class Resources:
    cpu: Float(gt=0) = Field(1.0, description="CPUs per trial; torch threads in the trial match it")
    gpu: Optional[Float(ge=0)] = Field(None, description="GPUs per trial (fractions share one); null: "
                                                         "1/max_concurrent of a GPU if torch sees one, else 0")


@dataclass(config=CONFIG)
class Tracking:
    uri: Optional[str] = Field(None, description="MLflow tracking URI; default sqlite:///<results>/mlflow.db")
    experiment: Optional[str] = Field(None, description="MLflow experiment; default: the study name")
    register: bool = Field(True, description="register kd_best's student in MLflow's Model Registry, a new "
                           "version per search, aliased champion when it is at least as good as the current one")
    model_name: Optional[str] = Field(None, min_length=1, description="its registered model; default: "
                                      "<study name>-student")


@dataclass(config=CONFIG)
class Report:
    """What the report recommends with several students."""
    within: Float(ge=0) = Field(1.0, description="several students: recommend the smallest on the front within this "
                                "many points of test accuracy of the most accurate one")
