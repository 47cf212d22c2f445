"""Word-level language modelling: Penn Treebank, WikiText-2 (the packaged slice or the full set)."""

from spacec.runtime.domains.base import Best, Domain, register_domain
from spacec.runtime.domains.text.data import CORPUS_SOURCES, TASK, LanguageData
from spacec.runtime.domains.text.search import LanguageSearchTask
from spacec.runtime.domains.text.train import LanguageTrainTask, report_lines

DOMAIN = register_domain(Domain(
    name=TASK,
    data_config=LanguageData,
    preset_prefix="rnn_",
    search_task=LanguageSearchTask,
    train_task=LanguageTrainTask,
    best=Best("loss", higher=False),
    report_lines=report_lines,
    datasets=lambda: CORPUS_SOURCES,
    splits=("val",),
))
