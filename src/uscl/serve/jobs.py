"""The job queue: one worker thread runs the uploads one at a time through the one loaded model.

A job owns two folders under the server's work folder, both named by its id
(``uuid4().hex``, never anything from the client): ``uploads/<id>/`` (the upload,
deleted as soon as the job ends, whatever happened) and ``results/<id>/`` (what
`uscl predict` writes, served by artefact name until the job is one of more than
``keep`` finished jobs, then deleted). The whole work folder goes at shutdown.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import traceback
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from uscl.errors import UsclError
from uscl.serve.predictor import InputError, Predictor
from uscl.video.decoded import DecodeError

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


@dataclass
class Job:
    id: str
    name: str  # display name of the upload
    upload_dir: Path
    result_dir: Path
    path: Path | None = None  # the saved upload
    kind: str | None = None
    size: int = 0
    status: str = QUEUED
    stage: str = "queued"
    done_frames: int | None = None
    total_frames: int | None = None
    error: str | None = None
    http_status: int = 200
    files: dict[str, str] = field(default_factory=dict)  # artefact name → path relative to result_dir
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    finished_event: threading.Event = field(default_factory=threading.Event, repr=False)

    def result(self) -> dict | None:
        """The predictions.json content of a finished job."""
        if self.status != DONE or "predictions.json" not in self.files:
            return None
        return json.loads((self.result_dir / self.files["predictions.json"]).read_text())

    def artefact(self, name: str) -> Path | None:
        """The file of artefact ``name`` (a fixed name such as sheet.png), if this job made it."""
        rel = self.files.get(name)
        return self.result_dir / rel if rel else None


class JobQueue:
    """FIFO of jobs and the worker thread that runs them with one :class:`Predictor`."""

    def __init__(self, predictor: Predictor, work_dir: Path, keep: int = 50):
        self.predictor = predictor
        self.work_dir = Path(work_dir)
        self.keep = max(1, keep)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._pending: deque[str] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self._thread = threading.Thread(target=self._work, name="uscl-serve-worker", daemon=True)
        self._thread.start()

    def new_job(self) -> Job:
        """A job with its (empty) upload folder, not yet queued."""
        job_id = uuid.uuid4().hex
        job = Job(job_id, "", self.work_dir / "uploads" / job_id, self.work_dir / "results" / job_id)
        job.upload_dir.mkdir(parents=True)
        return job

    def discard(self, job: Job) -> None:
        """Drop a job whose upload was refused (never queued)."""
        shutil.rmtree(job.upload_dir, ignore_errors=True)

    def submit(self, job: Job) -> Job:
        with self._wake:
            self.jobs[job.id] = job
            self._pending.append(job.id)
            self._wake.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    @property
    def waiting(self) -> int:
        """Jobs waiting for their turn."""
        with self._lock:
            return len(self._pending)

    def position(self, job: Job) -> int:
        """1 for the next job to run, 2 behind it ...; 0 when not waiting."""
        with self._lock:
            try:
                return self._pending.index(job.id) + 1
            except ValueError:
                return 0

    def close(self, timeout: float = 30.0) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self._thread.join(timeout)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                job = self.jobs[self._pending.popleft()]
            self._run(job)
            self._prune()

    def _run(self, job: Job) -> None:
        job.status, job.started = RUNNING, time.time()

        def progress(stage: str, done: int | None = None, total: int | None = None) -> None:
            job.stage, job.done_frames, job.total_frames = stage, done, total

        try:
            job.result_dir.mkdir(parents=True)
            job.files = self.predictor.run(job.path, job.name, job.kind, job.result_dir, progress)
            job.status, job.stage = DONE, "done"
        except (InputError, DecodeError, UsclError, OSError, ValueError) as exc:
            self._fail(job, 422, str(exc) or type(exc).__name__)
        except Exception as exc:  # a bug must not stop the worker: the job fails, the server goes on
            traceback.print_exc()
            self._fail(job, 500, f"internal error while predicting: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(job.upload_dir, ignore_errors=True)
            job.finished = time.time()
            job.finished_event.set()

    @staticmethod
    def _fail(job: Job, status: int, message: str) -> None:
        job.status, job.stage, job.http_status, job.error = FAILED, "failed", status, message
        job.files = {}
        shutil.rmtree(job.result_dir, ignore_errors=True)

    def _prune(self) -> None:
        """Forget (and delete the results of) the oldest finished jobs beyond ``keep``."""
        with self._lock:
            finished = [j for j in self.jobs.values() if j.finished is not None]
            old = finished[: max(0, len(finished) - self.keep)]
            for j in old:
                del self.jobs[j.id]
        for j in old:
            shutil.rmtree(j.result_dir, ignore_errors=True)
