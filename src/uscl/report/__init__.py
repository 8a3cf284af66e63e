"""Reports, after pretraining and fine-tuning: recomputed from the files their runs leave, never from a live run.

* :mod:`.finetune`   - :func:`report`: report.md, metrics.json and plots of a fine-tuning run or a comparison
* :mod:`.comparison` - :func:`compare`: several inits fine-tuned over the same folds, then their table and report
* :mod:`.pretrain`   - :func:`pretrain_report`: report.md and loss curves of a pretraining run
* :mod:`.embed`      - ``uscl embed``: kNN class accuracy across videos, video purity, 2-D map, neighbour grid
  (:mod:`.embedding`: the numbers; :mod:`.embed_source`: which backbone; :mod:`.embed_plots`, :mod:`.embed_report`)
* :mod:`.plots`      - the PNG figures (matplotlib, Agg backend)
* :mod:`.stats`      - a study table's means, 95% t-intervals (over cells or seeds), paired differences
"""

from uscl.report.comparison import CompareResult, compare, write_comparison
from uscl.report.finetune import comparison_data, load_run, markdown_table, paired_table, report
from uscl.report.pretrain import is_pretrain_run, pretrain_report

__all__ = [
    "CompareResult", "compare", "comparison_data", "is_pretrain_run", "load_run", "markdown_table",
    "paired_table", "pretrain_report", "report", "write_comparison",
]
