"""Data domains (spacec.runtime.domains.base): each registers one `Domain` when imported."""

from spacec.runtime.domains import image, text  # noqa: F401  (register their domains)
from spacec.runtime.domains.base import (
    DOMAINS,
    BatchPlan,
    Domain,
    LossOutput,
    SearchTask,
    StepBatches,
    Task,
    TrainTask,
    data_config_class,
    domain,
)

__all__ = ["DOMAINS", "BatchPlan", "Domain", "LossOutput", "SearchTask", "StepBatches", "Task",
           "TrainTask", "data_config_class", "domain"]
