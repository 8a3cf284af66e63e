"""`prepare --workers N`: the same store byte for byte as one process; bad files, dying workers, kill -9."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from archive_fixtures import SMALL, make_archive, skipped_rows, store_files

import uscl.store.prepare as prep
from uscl.cli import main
from uscl.errors import UsclError
from uscl.store import FrameStore
from uscl.store.ingest_one import CRASHED, outcome_of, run_task
from uscl.store.prepare import prepare, worker_count
from uscl.video.samples import moving_frames, write_video

SRC_ROOT = Path(prep.__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("archive") / "src")


@pytest.fixture(scope="module")
def single(archive, tmp_path_factory):
    """The store of one in-process run (the reference)."""
    out = tmp_path_factory.mktemp("single") / "store"
    prepare(archive, out, SMALL, mask_suffix="_mask", show_progress=False, workers=1)
    return out


def test_two_workers_give_the_single_run_byte_for_byte(archive, single, tmp_path):
    out = tmp_path / "store"
    summary = prepare(archive, out, SMALL, mask_suffix="_mask", show_progress=False, workers=2)
    assert summary.workers == 2 and "2 worker processes" in summary.format()
    assert store_files(out) == store_files(single)
    one = FrameStore(single)
    assert summary.decoded == len(one) and summary.frames_decoded > 0
    # the bad files are skipped and listed, with the reasons one process gives
    skipped = skipped_rows(out)
    assert set(skipped) == {"bad/garbage.mp4", "bad/cut.mp4"} and skipped == skipped_rows(single)
    assert "not a readable video" in skipped["bad/garbage.mp4"]
    assert dict(summary.skipped) == skipped
    assert FrameStore(out).verify() == len(one)
    # a re-run with workers is incremental: nothing decoded, the same bytes
    again = prepare(archive, out, SMALL, mask_suffix="_mask", show_progress=False, workers=2)
    assert again.decoded == 0 and again.reused == len(one) and store_files(out) == store_files(single)


def test_worker_count():
    assert worker_count(3, 10) == 3 and worker_count(8, 2) == 2 and worker_count(None, 1) == 1
    assert worker_count(None, 1000) == len(os.sched_getaffinity(0))
    with pytest.raises(UsclError, match="workers must be at least 1") as err:
        worker_count(0, 5)
    assert err.value.param == "workers"


def dies_on_boom(task):
    """run_task, but the worker dies on boom.mp4 (as if the system killed it for memory)."""
    if task.inp.name == "boom.mp4":
        os._exit(9)
    return run_task(task)


def test_a_dying_worker_skips_its_file_and_the_run_goes_on(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.mp4", "boom.mp4", "c.mp4", "d.mp4", "e.mp4"):
        write_video(src / name, moving_frames(4, 32, 32, seed=len(name)), fps=10)
    monkeypatch.setattr(prep, "run_task", dies_on_boom)  # what the workers run (pickled by reference)
    summary = prepare(src, tmp_path / "store", SMALL, show_progress=False, workers=2)
    assert summary.skipped == [("boom.mp4", CRASHED)]
    assert [v.source for v in FrameStore(tmp_path / "store").videos] == ["a.mp4", "c.mp4", "d.mp4", "e.mp4"]
    assert skipped_rows(tmp_path / "store") == {"boom.mp4": CRASHED}


def enospc(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


def full_disk(task):
    """run_task on a full disk."""
    return outcome_of(enospc, task, None)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_stops_the_run_with_a_clear_message(tmp_path, monkeypatch, workers):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_video(src / name, moving_frames(3, 32, 32), fps=10)
    monkeypatch.setattr(prep, "run_task", full_disk)  # in the workers
    monkeypatch.setattr(prep, "_ingest_one", enospc)  # in this process
    with pytest.raises(UsclError, match="disk full while writing .*free space and re-run"):
        prepare(src, tmp_path / "store", SMALL, show_progress=False, workers=workers)
    assert not (tmp_path / "store" / "manifest.json").exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "uscl", "prepare", *args]


def _alive_in_group(pgid: int) -> list[int]:
    """Processes of the group that still run (zombies waiting to be reaped do not)."""
    alive = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(d))
    return alive


@pytest.mark.parametrize("kill", ["group", "parent"])
def test_kill_9_of_a_parallel_run_then_rerun_gives_the_single_run(tmp_path, kill):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(14):
        write_video(src / f"clip_{i:02d}.mp4", moving_frames(40, 96, 96, seed=i), fps=10)
    (src / "broken.mp4").write_bytes(b"\0" * 4000)
    clean = tmp_path / "clean"
    prepare(src, clean, SMALL, show_progress=False, workers=1)

    out = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC_ROOT), os.environ.get("PYTHONPATH", "")]),
           "USCL_NO_PROGRESS": "1"}
    proc = subprocess.Popen(_cli(str(src), str(out), "--size", "32", "--workers", "2"), env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120

    def finished() -> int:  # videos with a sidecar (not the options, not a temp file being written)
        return sum(1 for p in (out / ".ingest").glob("*.json") if p.name[0] not in "._")

    try:
        while not finished():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no video finished in 120 s"
            time.sleep(0.01)
        if kill == "group":
            os.killpg(proc.pid, signal.SIGKILL)  # the parent, the fork server and the workers
        else:
            os.kill(proc.pid, signal.SIGKILL)  # the parent alone: its workers must not live on
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    deadline = time.monotonic() + 30
    while _alive_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive_in_group(proc.pid), "workers outlived their killed parent"
    assert not (out / "manifest.json").exists()  # killed before the end: nothing a reader takes as a store
    assert 1 <= finished() < 14

    rerun = subprocess.run(_cli(str(src), str(out), "--size", "32", "--workers", "2", "--json"), env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert store_files(out) == store_files(clean)
    assert not [p for p in (out / "arrays").iterdir() if p.name.startswith(".")]  # no temp file left
    assert main(["prepare", str(src), str(out), "--size", "32", "--workers", "2"]) == 0  # and reuses it all
    assert store_files(out) == store_files(clean)


UNGUARDED = """
import sys
from uscl.errors import UsclError
from uscl.store.prepare import PrepareOptions, prepare
summary = prepare(sys.argv[1], sys.argv[2], PrepareOptions(size=32), show_progress=False)
print("default", summary.workers, summary.videos)
try:
    prepare(sys.argv[1], sys.argv[3], PrepareOptions(size=32), show_progress=False, workers=2)
except UsclError as exc:
    print("asked for", exc.param)
"""


def test_a_script_without_the_main_guard_falls_back_to_one_process(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_video(src / name, moving_frames(3, 32, 32), fps=10)
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), str(src), str(tmp_path / "s1"), str(tmp_path / "s2")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["default 1 2", "asked for workers"]
    assert "decoding in this process instead" in proc.stderr and "__main__" in proc.stderr
