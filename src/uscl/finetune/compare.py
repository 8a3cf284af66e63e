"""Several initialisations fine-tuned over the SAME folds: :func:`finetune_inits`.

``DIR/splits.json`` is made once; every init runs into ``DIR/<name>/`` with
those folds, so per-fold differences are paired. ``only_folds`` is passed to
every init, so a partial comparison still compares the same folds; ``resume``
continues each init's run (complete folds kept, the rest redone), which also
fills in folds a partial comparison left out. The table and the report of the
runs (``comparison.json``, ``comparison.md``, ``report.md``) are written by
:func:`uscl.report.compare`, which calls this first: reports come after
fine-tuning, so nothing here imports :mod:`uscl.report`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from uscl.errors import UsclError
from uscl.finetune.config import FinetuneConfig
from uscl.checkpoint.inits import load_init, name_for, parse_init
from uscl.finetune.pretraining_labels import check_pretraining_labels
from uscl.finetune.splits import Splits, select_folds
from uscl.finetune.train import build_splits, finetune
from uscl.models.classifier import build_classifier
from uscl.finetune.dense_run import TASKS
from uscl.store import FrameStore
from uscl.utils.atomic import prepare_output_dir


@dataclass
class InitRuns:
    """The fine-tuning runs of a comparison: ``out/<name>/`` per init, all over ``splits``."""

    out: Path
    splits: Splits
    specs: dict[str, str]  # name -> init spec, in the order given


def resolve_names(inits: list[str], unsafe_pickle: bool = False) -> list[tuple[str, str, dict]]:
    """(name, spec, meta) per init, loading each once to name it (method of a run) and to fail early."""
    out, seen = [], {}
    for text in inits:
        spec = parse_init(text)
        sd, meta = load_init(spec, unsafe_pickle=unsafe_pickle)
        name = name_for(spec, meta)
        if name in seen:
            if spec.explicit_name:
                raise UsclError(f"two inits are named {name!r}; give distinct names with NAME=SPEC", param="inits")
            seen[name] += 1
            name = f"{name}{seen[name]}"
        seen.setdefault(name, 1)
        out.append((name, spec.spec, {"sd": sd, "meta": meta}))
    return out


def _check_labels(store, splits, named, base: FinetuneConfig) -> None:
    """An init pretrained with the test videos' labels is refused before anything runs or is written
    (classification: the masks of segmentation and detection are no pretraining label)."""
    if base.task != "classify":
        return
    for _, spec, _ in named:
        check_pretraining_labels(store, splits, parse_init(spec), base.allow_pretraining_labels, log=lambda *a: None)


def finetune_inits(base: FinetuneConfig, inits: list[str], out: str | Path, *, resume: bool = False,
                   log=print) -> InitRuns:
    """Run ``finetune`` once per init over one shared split (``out/splits.json``), into ``out/<name>/``.

    ``resume`` (or ``base.resume``) keeps the folder's splits.json and resumes each init's run:
    its complete folds are kept, missing or partial ones trained. ``base.only_folds`` applies
    to every init. Every init is loaded and checked before anything runs or is written.
    """
    if not inits:
        raise UsclError("give at least one init", param="inits")
    out = Path(out)
    resume = resume or base.resume
    base = dataclasses.replace(base, out=str(out), resume=resume)
    base.validate()
    store = FrameStore(base.store)
    named = resolve_names(inits, base.unsafe_pickle)
    for name, spec, loaded in named:  # architecture/key problems surface before anything runs
        arch = base.arch or loaded["meta"].get("arch") or "resnet18"
        if base.task != "classify":
            TASKS[base.task][0](arch, 1, loaded["sd"], spec, base)
        else:
            build_classifier(arch, 2, loaded["sd"], spec)
    shared = out / "splits.json"
    if resume and shared.is_file():
        splits_cfg = dataclasses.replace(base, splits=str(shared), classes=None, where={})
        splits = build_splits(splits_cfg, store)
        _check_labels(store, splits, named, base)
    else:
        splits = build_splits(base, store)
        select_folds(splits, base.only_folds)  # a bad only_folds is refused before anything is written
        _check_labels(store, splits, named, base)
        prepare_output_dir(out, overwrite=base.overwrite, marker="comparison.json")
        splits.save(shared)
    selected = select_folds(splits, base.only_folds)
    log(f"compare {', '.join(n for n, _, _ in named)} over the same folds:\n{splits.summary()}")
    if base.only_folds is not None:
        log(f"only_folds: every init trains fold(s) {', '.join(str(f.index) for f in selected)} of {splits.n_folds}")

    for name, spec, _ in named:
        cfg = dataclasses.replace(base, init=spec, out=str(out / name), splits=None)
        finetune(cfg, splits=splits, log=log, log_splits=False)  # the shared folds were printed above
    return InitRuns(out, splits, {name: spec for name, spec, _ in named})
