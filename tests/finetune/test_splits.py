import json

import pytest

from uscl.errors import UsclError
from uscl.finetune.splits import (Splits, carve_validation, check_leakage, load_splits, make_splits,
                                  source_stem)
from uscl.store import FrameStore


def _sides(splits):
    return [(set(f.train), set(f.val), set(f.test)) for f in splits.folds]


def test_folds_split_by_video_cover_all_once_and_are_deterministic(make_store):
    store = FrameStore(make_store(n_videos=12, frames=2))
    a = make_splits(store, n_folds=3, seed=1)
    b = make_splits(store, n_folds=3, seed=1)
    c = make_splits(store, n_folds=3, seed=2)
    assert a.to_json() == b.to_json()
    assert [f.test for f in a.folds] != [f.test for f in c.folds]
    tests = [v for f in a.folds for v in f.test]
    assert sorted(tests) == sorted(v.video_id for v in store.videos)  # every video tested exactly once
    for tr, _, te in _sides(a):
        assert not tr & te and tr | te == set(tests)
        assert {store[v].label for v in te} == set(store.classes)  # stratified: every class in every test fold


def test_patients_never_straddle_folds(make_store):
    store = FrameStore(make_store(n_videos=12, frames=2, patients=True))  # patient = i // 2
    splits = make_splits(store, n_folds=3, seed=0)
    for tr, _, te in _sides(splits):
        assert not {store[v].patient for v in tr} & {store[v].patient for v in te}
    carve_validation(splits, 0.3, seed=0)
    for tr, va, te in _sides(splits):
        assert va and not {store[v].patient for v in tr} & {store[v].patient for v in va}
        assert not (tr | va) & te


def test_leakage_check_fails_loudly(make_store, tmp_path):
    store = FrameStore(make_store(n_videos=6, frames=2, patients=True))
    splits = make_splits(store, n_folds=2)
    f = splits.folds[0]
    f.train.append(f.test[0])
    with pytest.raises(UsclError, match="LEAKAGE CHECK FAILED.*both train and test"):
        check_leakage(splits, store)
    # a patient split over both sides is caught even if the file's groups were edited away
    splits = make_splits(store, n_folds=2)
    data = splits.to_json()
    data["groups"] = {v: f"video:{v}" for v in data["groups"]}
    f0 = data["folds"][0]
    patient_of = {v.video_id: v.patient for v in store.videos}
    mover = next(v for v in f0["test"])
    partner = next(v for v in f0["test"] if v != mover and patient_of[v] == patient_of[mover])
    f0["test"].remove(partner)
    f0["train"].append(partner)
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UsclError, match="patient"):
        load_splits(path, store)


def test_small_class_is_named_or_merged_on_request(make_store):
    root = make_store(n_videos=8, frames=2, classes=("covid", "regular", "viral", "pneumonia"))
    store = FrameStore(root)  # 2 videos per class
    with pytest.raises(UsclError, match=r"covid has 2 videos.*folds=2"):
        make_splits(store, n_folds=3)
    merged = make_splits(store, n_folds=3, merge_small_folds=True)
    assert merged.notes and "merge_small_folds" in merged.notes[0]
    only = make_splits(store, n_folds=2, classes=["covid", "regular"])
    assert set(only.labels.values()) == {"covid", "regular"}
    assert sum(r.startswith("class") for r in only.excluded.values()) == 4


def test_where_filter_and_bad_input(make_store):

    root = make_store(n_videos=6, frames=2)
    store = FrameStore(root)
    for i, v in enumerate(store.videos):
        v.extra["probe"] = "convex" if i < 5 else "linear"
    with pytest.raises(UsclError, match="no video matches where probe=phased"):
        make_splits(store, n_folds=2, where={"probe": "phased"})
    with pytest.raises(UsclError, match="regular has 1 videos"):
        make_splits(store, n_folds=2, where={"probe": "convex"}, classes=["covid", "pneumonia", "regular"])
    s = make_splits(store, n_folds=2, where={"probe": "convex"}, classes=["covid", "pneumonia"])
    assert all(store[v].extra["probe"] == "convex" for v in s.labels)
    with pytest.raises(UsclError, match="not in the store"):
        make_splits(store, classes=["covid", "flu"])
    unl = FrameStore(make_store(n_videos=4, frames=2, labelled=0.0))
    with pytest.raises(UsclError, match="no labelled videos"):
        make_splits(unl, n_folds=2)


def test_pocovid_cross_val_import(make_store, tmp_path):
    from uscl.store import StoreWriter
    import numpy as np

    w = StoreWriter(tmp_path / "store", options={"size": 8})
    names = {"Cov-Atlas+(44).gif": "covid", "Cov-b.mp4": "covid", "Reg-a.gif": "regular",
             "Reg-B.mp4": "regular", "Pneu-x.gif": "pneumonia", "Pneu-y.avi": "pneumonia"}
    for i, (name, lab) in enumerate(names.items()):
        w.add_video(f"id{i}", np.zeros((2, 8, 8, 1), np.uint8), label=lab, source=f"videos/convex/{name}")
    w.write_manifest()
    store = FrameStore(tmp_path / "store")
    cv = {
        "0": {"train": [["Cov-b.mp4", "Reg-B.mp4", "Pneu-y.avi"], ["cov", "reg", "pne"]],
              "test": [["Cov-Atlas+(44).gif_frame0.jpg", "Cov-Atlas+(44).gif_frame3.jpg", "reg-a.gif", "Pneu-x.gif",
                        "Unknown.gif"], ["cov", "cov", "reg", "pne", "cov"]]},
        "1": {"train": [["Cov-Atlas+(44).gif", "Reg-a.gif", "Pneu-x.gif"], ["cov", "reg", "pne"]],
              "test": [["Cov-b.mp4", "Reg-B.mp4", "Pneu-y.avi"], ["cov", "reg", "pne"]]},
    }
    path = tmp_path / "cross_val.json"
    path.write_text(json.dumps(cv))
    splits = load_splits(path, store)
    assert splits.method == "imported:cross_val.json"
    assert splits.folds[0].test == ["id0", "id2", "id4"]  # frame names collapse to their video; case-insensitive
    assert sorted(splits.folds[1].test) == ["id1", "id3", "id5"]
    assert any("Unknown" in n for n in splits.notes)
    assert source_stem("x/Cov-Atlas+(44).gif_frame12.jpg") == "Cov-Atlas+(44)"
    # a leaking file is refused
    cv["1"]["train"][0].append("Cov-b.mp4")
    cv["1"]["train"][1].append("cov")
    path.write_text(json.dumps(cv))
    with pytest.raises(UsclError, match="LEAKAGE"):
        load_splits(path, store)
    # round trip of our own format
    ours = Splits.from_json(splits.to_json())
    assert ours.to_json() == splits.to_json()
