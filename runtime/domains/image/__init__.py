"""Image classification: CIFAR-10 (the packaged sample or the full set), image folders, ImageNet."""

from spacec.runtime.domains.base import Best, Domain, register_domain
from spacec.runtime.domains.image.data import IMAGE_SOURCES, ImageData
from spacec.runtime.domains.image.search import ImageSearchTask
from spacec.runtime.domains.image.train import ImageTrainTask, report_lines

DOMAIN = register_domain(Domain(
    name="image",
    data_config=ImageData,
    preset_prefix="",
    search_task=ImageSearchTask,
    train_task=ImageTrainTask,
    best=Best("acc", higher=True),
    report_lines=report_lines,
    datasets=lambda: IMAGE_SOURCES,
    splits=("val",),  # the test set is only reported (final_scores), never chosen on
))
