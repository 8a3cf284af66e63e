"""The output files of a classification predict run, written as results arrive (and resumable).

Why: an archive of thousands of clips must not wait for the last one to write anything, hold every
result in memory, or start again after a crash. So :class:`PredictionWriter`:

- appends each input's rows to ``frames.csv`` and ``videos.csv`` as soon as it is predicted (the CSVs
  hold the inputs done so far while the run goes on), then commits the input with one line in
  ``.predictions.jsonl`` (its ``predictions.json`` entry, and its explanation record);
- on :meth:`close`, writes ``predictions.json`` (atomically, streamed from that journal: memory stays
  flat in the number of inputs) and ``skipped.csv``;
- with ``resume``, reads the journal of an earlier run into the same folder, refuses another model or
  preprocessing (naming what differs), drops the CSV rows of inputs it had not committed (a kill
  between the CSV rows and the journal line) and returns the committed names, which the caller skips.

The files are those :func:`uscl.infer.predict.write_outputs` writes for an in-memory run (it uses
this writer), so a resumed run's files equal a single run's up to float rounding (to 1e-6).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterator

from uscl.errors import UsclError
from uscl.infer.model import LoadedModel
from uscl.utils.atomic import Streamed, atomic_write_json, atomic_write_json_streamed, atomic_write_text

JOURNAL = ".predictions.jsonl"
STATE = ".predict_state.json"
VIDEO_RULE = "mean of the frame probabilities; agreement = share of frames whose arg-max is that class"


def run_header(model: LoadedModel, device: str) -> dict:
    """What ``predictions.json`` says of the model and run, before its ``inputs``."""
    return {
        "format": "uscl-predictions",
        "version": 1,
        "model": str(model.source),
        "folds": [f.fold for f in model.folds],
        "ensemble": model.is_ensemble,
        "combine": "mean of the folds' probabilities" if model.is_ensemble else None,
        "video_rule": VIDEO_RULE,
        "classes": list(model.classes),
        "preprocessing": model.preprocessing.to_dict(),
        "device": device,
    }


def _csv_line(row: list) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue()


class PredictionWriter:
    """frames.csv, videos.csv (streamed) and predictions.json (at :meth:`close`) in ``out``."""

    def __init__(self, out: str | os.PathLike, model: LoadedModel, device: str, *, resume: bool = False):
        self.out = Path(out)
        self.header = run_header(model, device)
        self.classes = list(model.classes)
        pcols = [f"prob_{c}" for c in self.classes]
        self.heads = {"frames": ["input", "frame", "prediction", *pcols],
                      "videos": ["input", "kind", "num_frames", "prediction", *pcols, "agreement"]}
        self.done: set[str] = self._recover() if resume else self._start()
        self.files = {name: open(self.out / f"{name}.csv", "a", encoding="utf-8", newline="")
                      for name in self.heads}
        self.journal = open(self.out / JOURNAL, "a", encoding="utf-8")

    # -- start / resume --------------------------------------------------------------------
    def _identity(self) -> dict:
        return {k: v for k, v in self.header.items() if k != "device"}

    def _start(self) -> set[str]:
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / STATE, self._identity())
        for name, head in self.heads.items():
            atomic_write_text(self.out / f"{name}.csv", _csv_line(head))
        atomic_write_text(self.out / JOURNAL, "")
        return set()

    def _recover(self) -> set[str]:
        state = self.out / STATE
        if not state.is_file():
            if (self.out / "predictions.json").is_file():
                raise UsclError(f"{self.out} holds a finished run written before runs could be resumed; "
                                "predict into a new folder", param="resume")
            return self._start()
        old = json.loads(state.read_text())
        diff = [k for k in set(old) | set(self._identity()) if old.get(k) != self._identity().get(k)]
        if diff:
            raise UsclError(f"{self.out} holds predictions of another model or preprocessing (differs in: "
                            f"{', '.join(sorted(diff))}); predict into a new folder", param="resume")
        done = []
        text = (self.out / JOURNAL).read_text(encoding="utf-8") if (self.out / JOURNAL).is_file() else ""
        lines = text.split("\n")
        for line in lines[:-1]:  # the last piece is "" or a line the kill cut short
            done.append(json.loads(line)["input"]["input"])
        atomic_write_text(self.out / JOURNAL, "".join(f"{line}\n" for line in lines[:-1]))
        for name, head in self.heads.items():
            self._keep_rows(self.out / f"{name}.csv", head, set(done))
        return set(done)

    @staticmethod
    def _keep_rows(path: Path, head: list[str], done: set[str]) -> None:
        """Rewrite ``path`` with the rows of committed inputs only (whole rows: a cut row is dropped)."""
        rows = []
        if path.is_file():
            with open(path, encoding="utf-8", newline="") as fh:
                rows = [r for r in list(csv.reader(fh))[1:] if len(r) == len(head) and r[0] in done]
        atomic_write_text(path, "".join(_csv_line(r) for r in [head, *rows]))

    # -- per input -----------------------------------------------------------------------------
    def add(self, pred, explain: dict | None = None) -> None:
        """Write one input's rows, then commit it in the journal."""
        classes = self.classes
        fh = self.files["frames"]
        for t, p in enumerate(pred.frame_probs):
            fh.write(_csv_line([pred.name, t, classes[int(p.argmax())], *(f"{v:.6f}" for v in p)]))
        fh.flush()
        self.files["videos"].write(_csv_line([pred.name, pred.kind, pred.num_frames, pred.label,
                                              *(f"{v:.6f}" for v in pred.probs), f"{pred.agreement:.6f}"]))
        self.files["videos"].flush()
        entry = {"input": pred.to_dict(), **({"explain": explain} if explain is not None else {})}
        self.journal.write(json.dumps(entry) + "\n")
        self.journal.flush()
        self.done.add(pred.name)

    # -- the end ---------------------------------------------------------------------------
    def _entries(self, key: str) -> Iterator[dict]:
        with open(self.out / JOURNAL, encoding="utf-8") as fh:
            for line in fh:
                entry = json.loads(line)
                if key in entry:
                    yield entry[key]

    def close(self, skipped: list[tuple[str, str]], extra: dict | None = None) -> dict[str, Path]:
        """Finish the CSVs and write predictions.json and skipped.csv. ``extra`` goes before ``inputs``
        (``{"explain": {..., "inputs": Streamed("explain")}}``: the journal's explanation records)."""
        for fh in [*self.files.values(), self.journal]:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        doc = {**self.header, **(extra or {})}
        doc["inputs"] = Streamed("input")
        doc["skipped"] = [{"input": n, "reason": why} for n, why in skipped]
        paths = {"frames": self.out / "frames.csv", "videos": self.out / "videos.csv",
                 "json": self.out / "predictions.json"}
        atomic_write_json_streamed(paths["json"], doc, {"input": lambda: self._entries("input"),
                                                        "explain": lambda: self._entries("explain")})
        skipped_csv = self.out / "skipped.csv"
        if skipped:
            atomic_write_text(skipped_csv, "".join(_csv_line(r) for r in [["input", "reason"], *map(list, skipped)]))
            paths["skipped"] = skipped_csv
        else:
            skipped_csv.unlink(missing_ok=True)
        return paths
