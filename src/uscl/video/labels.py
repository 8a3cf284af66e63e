"""Labels (and patient ids) for inputs: from a CSV, the parent folder, or a file-name prefix.

CSV: columns ``path,label`` and optionally ``patient``; ``path`` is relative to
SRC (a file, or a frame folder). Any other column (``probe``, ``kind``...) is
kept as a string in the record's ``extra`` and can be filtered on with
``--where probe=convex``. A file the CSV does not name falls back to
``label_from`` if set, else stays unlabelled.

Which CSV: the one given; when neither a CSV nor ``label_from`` is given, a
``labels.csv`` at the root of SRC (what `uscl synth` writes) is used, and the
caller says so (:func:`root_labels_csv`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from uscl.errors import UsclError

# POCUS (Born et al.) file-name prefixes
DEFAULT_PREFIX_MAP: dict[str, str] = {
    "Cov": "covid",
    "Pneu": "pneumonia",
    "pneu": "pneumonia",
    "Reg": "regular",
    "Vir": "viral",
}

LABEL_SOURCES = ("parent", "prefix")
ROOT_LABELS_CSV = "labels.csv"  # used when no labels option is given


class FoundLabelsError(UsclError):
    """The labels.csv found at the root of SRC (used because no labels option was given) is not usable."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(
            f"{problem}\n({self.path} was found at the root of the source and used because neither labels_csv "
            f"nor label_from was given: fix it, or pass labels_csv (another CSV) or label_from)", param="labels_csv"
        )


def root_labels_csv(src: str | Path) -> Path | None:
    """``SRC/labels.csv`` if it is a file: the labels CSV when no labels option is given."""
    path = Path(src) / ROOT_LABELS_CSV
    return path if path.is_file() else None


@dataclass
class LabelInfo:
    label: str | None = None
    patient: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # other CSV columns

    def fields(self) -> dict[str, str | None]:
        """Everything a ``where`` filter can test."""
        return {**self.extra, "label": self.label, "patient": self.patient}


def normalise_rel(path: str, src: Path | None = None) -> str:
    """A CSV path as the POSIX path relative to SRC that discovery produces."""
    text = path.strip().replace("\\", "/")
    p = Path(text)
    if p.is_absolute() and src is not None:
        try:
            text = p.resolve().relative_to(src.resolve()).as_posix()
        except ValueError:
            return text
    parts = [part for part in PurePosixPath(text).parts if part not in ("", ".")]
    return "/".join(parts).rstrip("/")


def read_labels_csv(path: str | Path, src: Path | None = None) -> dict[str, LabelInfo]:
    """Rows of a labels CSV keyed by normalised relative path."""
    path = Path(path)
    if not path.is_file():
        raise UsclError(f"labels CSV not found: {path}", param="labels_csv")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            lower = {h.lower(): h for h in header}
            if "path" not in lower or "label" not in lower:
                raise UsclError(
                    f"{path}: a labels CSV needs columns 'path' and 'label' (and optionally 'patient'); "
                    f"found: {', '.join(header) or 'no header'}", param="labels_csv"
                )
            rows: dict[str, LabelInfo] = {}
            for line_no, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
                rel = normalise_rel(row.get(lower["path"], ""), src)
                if not rel:
                    continue
                label = row.get(lower["label"]) or None
                patient = row.get(lower["patient"]) or None if "patient" in lower else None
                skip = {lower["path"], lower["label"], lower.get("patient")}
                extra = {k: v for k, v in row.items() if k not in skip and v != ""}
                if rel in rows and rows[rel].label != label:
                    raise UsclError(f"{path}:{line_no}: {rel} is listed twice with different labels",
                                    param="labels_csv")
                rows[rel] = LabelInfo(label=label, patient=patient, extra=extra)
    except UnicodeDecodeError as exc:
        raise UsclError(f"{path} is not a UTF-8 text CSV ({exc})", param="labels_csv") from None
    except csv.Error as exc:
        raise UsclError(f"{path} is not a valid CSV ({exc})", param="labels_csv") from None
    return rows


def parse_prefix_map(text: str | None) -> dict[str, str]:
    """``"Cov=covid,Pneu=pneumonia"`` → dict; None or empty → the POCUS default."""
    if not text:
        return dict(DEFAULT_PREFIX_MAP)
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        prefix, sep, label = item.partition("=")
        if not sep or not prefix.strip() or not label.strip():
            raise UsclError(f"bad prefix_map entry {item!r}: expected PREFIX=LABEL, e.g. Cov=covid",
                            param="prefix_map")
        out[prefix.strip()] = label.strip()
    return out


def label_by_prefix(name: str, prefix_map: dict[str, str]) -> str | None:
    """The label of the longest prefix of ``name`` in the map (case-sensitive)."""
    for prefix in sorted(prefix_map, key=len, reverse=True):
        if name.startswith(prefix):
            return prefix_map[prefix]
    return None


def label_by_parent(rel: str) -> str | None:
    """The name of the folder holding the input (None at the top of SRC)."""
    parent = PurePosixPath(rel).parent.name
    return parent or None


def parse_where(items: list[str] | None) -> dict[str, set[str]]:
    """``["probe=convex", "label=covid,regular"]`` → {key: allowed values}."""
    out: dict[str, set[str]] = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise UsclError(f"bad where entry {item!r}: expected COLUMN=VALUE[,VALUE...], e.g. probe=convex",
                            param="where")
        out.setdefault(key.strip(), set()).update(v.strip() for v in values.split(",") if v.strip())
    return out


class LabelResolver:
    """Decides label, patient and extra fields for each input."""

    def __init__(
        self,
        csv_rows: dict[str, LabelInfo] | None = None,
        label_from: str | None = None,
        prefix_map: dict[str, str] | None = None,
    ):
        if label_from not in (None, *LABEL_SOURCES):
            raise UsclError(f"label_from must be one of {', '.join(LABEL_SOURCES)}, got {label_from!r}",
                            param="label_from")
        self.csv_rows = csv_rows or {}
        self.label_from = label_from
        self.prefix_map = prefix_map if prefix_map is not None else dict(DEFAULT_PREFIX_MAP)
        self.used_rows: set[str] = set()

    def resolve(self, rel: str) -> LabelInfo:
        row = self.csv_rows.get(rel)
        info = LabelInfo(label=row.label, patient=row.patient, extra=dict(row.extra)) if row else LabelInfo()
        if row is not None:
            self.used_rows.add(rel)
        if info.label is None and self.label_from == "parent":
            info.label = label_by_parent(rel)
        elif info.label is None and self.label_from == "prefix":
            info.label = label_by_prefix(PurePosixPath(rel).name, self.prefix_map)
        return info

    def unmatched_rows(self) -> list[str]:
        """CSV paths that named no discovered input."""
        return sorted(set(self.csv_rows) - self.used_rows)

    @staticmethod
    def matches(info: LabelInfo, where: dict[str, set[str]]) -> bool:
        fields = info.fields()
        return all(fields.get(k) is not None and fields.get(k) in allowed for k, allowed in where.items())
