"""``uscl compare`` as one call: fine-tune several inits over the same folds, then their table and report.

:func:`compare` runs :func:`uscl.finetune.compare.finetune_inits` (the
fine-tuning, which knows nothing of reports), then writes ``DIR/comparison.json``
and ``comparison.md`` (the table and the paired per-fold differences) and,
with :func:`uscl.report.finetune.report`, report.md, metrics.json and plots.
It lives here, after both, so that fine-tuning never imports the reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from uscl.finetune.compare import finetune_inits
from uscl.finetune.config import FinetuneConfig
from uscl.report.finetune import comparison_data, load_run, markdown_table, paired_table, report
from uscl.report.dense import dense_report, write_dense_comparison
from uscl.report.dense import tables as dense_tables
from uscl.utils.atomic import atomic_write_json, atomic_write_text


@dataclass
class CompareResult:
    out: Path
    comparison: dict  # what comparison.json holds
    table: str  # the markdown table, one row per init
    report: Path  # report.md


def compare(base: FinetuneConfig, inits: list[str], out: str | Path, *, resume: bool = False, log=print) -> CompareResult:
    """Run ``finetune`` once per init over one shared split; write the comparison and the report.

    ``resume`` (or ``base.resume``) keeps the folder's splits.json and resumes each init's run:
    its complete folds are kept, missing or partial ones trained. ``base.only_folds`` applies
    to every init.
    """
    runs = finetune_inits(base, inits, out, resume=resume, log=log)
    if base.task != "classify":
        data = write_dense_comparison(runs.out, runs.specs, base.store)
        table = dense_tables(data)
        rep = dense_report(runs.out)
        log(table)
        return CompareResult(runs.out, data, table, rep)
    data = write_comparison(runs.out, runs.specs, base.store)
    table = markdown_table(data)
    rep = report(runs.out)
    log(table)
    return CompareResult(runs.out, data, table, rep)


def write_comparison(out: Path, specs: dict[str, str], store: str) -> dict:
    """``out/comparison.json`` and ``comparison.md`` of the finished runs ``out/<name>/``; returns the former."""
    runs = {name: load_run(out / name) for name in specs}
    data = comparison_data(runs)
    data["store"] = store
    data["init_specs"] = dict(specs)
    atomic_write_json(out / "comparison.json", data)
    atomic_write_text(out / "comparison.md", f"# Comparison\n\n{markdown_table(data)}\n\n{paired_table(data)}\n")
    return data
