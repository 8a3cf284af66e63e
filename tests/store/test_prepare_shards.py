"""`prepare --shard K/N` then a final prepare (shared OUT) or `--merge` (separate folders): one run's store."""

from __future__ import annotations

import json

import pytest
from archive_fixtures import SMALL, make_archive, skipped_rows, store_files

from uscl.cli import main
from uscl.errors import UsclError
from uscl.store import FrameStore
from uscl.store.merge import merge_shards
from uscl.store.prepare import PrepareOptions, prepare
from uscl.store.shards import parse_shard, shard_of


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("archive") / "src", clips=6)


@pytest.fixture(scope="module")
def single(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "store"
    prepare(archive, out, SMALL, mask_suffix="_mask", show_progress=False, workers=1)
    return out


def _shard(archive, out, k, n, options=SMALL):
    return prepare(archive, out, options, mask_suffix="_mask", show_progress=False, workers=1, shard=f"{k}/{n}")


def test_shards_into_one_out_then_a_plain_prepare(archive, single, tmp_path):
    out = tmp_path / "store"
    summaries = [_shard(archive, out, k, 3) for k in (1, 2, 3)]
    assert not (out / "manifest.json").exists() and not (out / "skipped.csv").exists()
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["1-of-3.json", "2-of-3.json", "3-of-3.json"]
    assert sum(s.videos for s in summaries) == len(FrameStore(single))
    assert all(s.videos for s in summaries)  # every shard has work here (10 inputs by hash into 3)
    assert "shard 1/3 of frame store" in summaries[0].format()
    final = prepare(archive, out, SMALL, mask_suffix="_mask", show_progress=False, workers=2)
    assert final.decoded == 0 and final.reused == len(FrameStore(single))  # every shard's work reused
    assert store_files(out) == store_files(single)
    assert not (out / "shards").exists()


def test_shards_in_separate_folders_merged(archive, single, tmp_path):
    folders = [tmp_path / f"part{k}" for k in (1, 2, 3, 4)]
    for k, folder in enumerate(folders, 1):
        _shard(archive, folder, k, 4)
    out = tmp_path / "merged"
    assert main(["prepare", "--merge", *map(str, folders), str(out)]) == 0
    assert store_files(out) == store_files(single)
    assert set(skipped_rows(out)) == {"bad/garbage.mp4", "bad/cut.mp4"}
    assert FrameStore(out).verify() == len(FrameStore(single))
    # the sidecars came along: a later prepare from SRC is incremental
    again = prepare(archive, out, SMALL, mask_suffix="_mask", show_progress=False, workers=1)
    assert again.decoded == 0 and store_files(out) == store_files(single)


def test_merge_in_place_of_a_shared_out(archive, single, tmp_path):
    out = tmp_path / "store"
    for k in (1, 2):
        _shard(archive, out, k, 2)
    summary = merge_shards([out], out)
    assert store_files(out) == store_files(single) and summary.videos == len(FrameStore(single))
    assert "merged from 1 shard folders" in summary.format() and summary.skipped


def test_bad_shard_arguments_are_clear(archive, tmp_path, capsys):
    for bad, words in (("0/3", "K must be between 1 and N=3"), ("4/3", "K must be between 1 and N=3"),
                       ("2", "shard must be K/N"), ("a/b", "shard must be K/N"), ("1/0", "at least 1")):
        with pytest.raises(UsclError, match=words) as err:
            prepare(archive, tmp_path / "o", SMALL, shard=bad, show_progress=False)
        assert err.value.param == "shard"
    assert main(["prepare", str(archive), str(tmp_path / "o"), "--shard", "5/4"]) == 2
    assert "(set with --shard)" in capsys.readouterr().err
    with pytest.raises(UsclError, match="overwrite cannot be combined with shard"):
        prepare(archive, tmp_path / "o", SMALL, shard="1/2", overwrite=True, show_progress=False)
    assert main(["prepare", str(archive), str(tmp_path / "o"), str(tmp_path / "p")]) == 2
    assert "several folders are for --merge" in capsys.readouterr().err
    assert parse_shard((2, 4)) == (2, 4) and parse_shard(" 3 / 8 ") == (3, 8) and parse_shard(None) is None


def test_merge_refuses_shards_that_are_not_one_run(archive, tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _shard(archive, a, 1, 2)
    _shard(archive, b, 2, 2, options=PrepareOptions(size=48))
    with pytest.raises(UsclError, match=r"other options .*size 32 vs 48"):
        merge_shards([a, b], tmp_path / "m1")
    with pytest.raises(UsclError, match=r"shards 2/2 are missing"):
        merge_shards([a], tmp_path / "m2")
    _shard(archive, c, 1, 2)
    with pytest.raises(UsclError, match=r"shard 1/2 is there twice"):
        merge_shards([a, c], tmp_path / "m3")
    (tmp_path / "empty").mkdir()
    assert main(["prepare", "--merge", str(a), str(tmp_path / "empty"), str(tmp_path / "m4")]) == 2
    assert "holds no shard manifest" in capsys.readouterr().err
    assert not (tmp_path / "m1" / "manifest.json").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("x")
    _shard(archive, tmp_path / "b2", 2, 2)
    with pytest.raises(UsclError, match="not empty"):
        merge_shards([a, tmp_path / "b2"], busy)
    summary = merge_shards([a, tmp_path / "b2"], tmp_path / "m5")  # the right pair merges
    assert summary.videos == len(FrameStore(tmp_path / "m5"))
    manifest = json.loads((a / "shards" / "1-of-2.json").read_text())
    assert manifest["shard"] == [1, 2] and manifest["options"]["size"] == 32


def test_shard_of_a_file_does_not_move_when_files_are_added():
    rels = [f"p{i}/clip_{j}.mp4" for i in range(5) for j in range(40)]
    before = {r: shard_of(r, 8) for r in rels}
    assert set(before.values()) == set(range(1, 9))  # 200 paths reach every shard
    after = {r: shard_of(r, 8) for r in rels + ["new/one.mp4", "p0/clip_0b.mp4"]}
    assert all(after[r] == before[r] for r in rels)
