"""Did the init see, while pretraining, the labels of the videos it is now tested on?

USCL's supervised term trains on the labels of the pretraining videos. When
those videos are also this evaluation's test videos (the natural mistake:
pretrain with ``--method uscl`` on a store, then fine-tune on the same
store), the test labels have leaked into the backbone and every number is
optimistic. Pretraining runs list the videos whose labels they used
(``RUN/labelled_videos.json``); fine-tuning refuses an overlap unless asked,
and then every output says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from uscl.errors import UsclError
from uscl.checkpoint.inits import InitSpec
from uscl.checkpoint.run_files import LABELLED_FILE
LEAKAGE_NOTE = "PRETRAINED WITH TEST LABELS"


def labelled_videos_of(spec: InitSpec) -> tuple[Path, dict] | None:
    """(file, listing) of a ``checkpoint:`` init's pretraining run, when it used labels."""
    if spec.kind != "checkpoint" or not spec.path:
        return None
    path = Path(spec.path)
    run = path if path.is_dir() else path.parent
    listing = run / LABELLED_FILE
    if not listing.is_file():
        return None
    data = json.loads(listing.read_text())
    return (listing, data) if data.get("videos") else None


def seen_test_videos(store, splits, listing: dict) -> list[str]:
    """The videos tested in some fold whose labels the pretraining used.

    The same video is the same source file (sha256 of its bytes, so a store
    prepared at another size or frame rate from the same files matches); where
    a record has no hash, the same video id in the same store. Names alone
    are not identity: two synthetic sets share file names, not videos.
    """
    hashes = {v.get("content_hash") for v in listing["videos"] if v.get("content_hash")}
    same_store = listing.get("store_id") == store.store_id
    ids = {v.get("video_id") for v in listing["videos"]} if same_store else set()
    tested = sorted({vid for fold in splits.folds for vid in fold.test})
    seen = []
    for vid in tested:
        rec = store.videos[store.index_of(vid)]
        if (rec.content_hash and rec.content_hash in hashes) or rec.video_id in ids:
            seen.append(vid)
    return seen


def check_pretraining_labels(store, splits, spec: InitSpec, allow: bool, log=print) -> dict | None:
    """None when the init saw no test video's label; else refuse, or (``allow``) warn and describe it."""
    found = labelled_videos_of(spec)
    if found is None:
        return None
    listing, data = found
    seen = seen_test_videos(store, splits, data)
    if not seen:
        return None
    note = (f"the init {spec.name} ({spec.spec}) was pretrained with the labels of {len(seen)} of the videos "
            f"tested here (USCL's supervised term; {listing}): its results are optimistic")
    if not allow:
        raise UsclError(
            f"{note}. Pretrain with method uscl-selfsup or on other videos, or set "
            f"allow_pretraining_labels to run anyway (every output then says so). "
            f"Videos: {', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}", param="allow_pretraining_labels")
    log(f"WARNING: {note}")
    return {"videos": len(seen), "examples": seen[:5], "listing": str(listing), "note": note}
