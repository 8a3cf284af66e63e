"""The FastAPI app of `uscl serve`: the page, and the HTTP API that scripts call.

Routes (OpenAPI docs at ``/docs``):

* ``GET /``: the page (``static/page.html``, plain HTML + JS);
* ``POST /api/predict``: multipart field ``file`` → waits for its turn, returns
  the JSON `uscl predict --out` writes (header ``X-Uscl-Job``: the job id, for
  its artefacts);
* ``POST /api/jobs``: the same upload → 202 and the job (id, status); the page
  polls ``GET /api/jobs/{id}`` (stage, queue position, frames done/total; the
  JSON and artefact URLs when done; a failed job answers with its 4xx);
* ``GET /api/jobs/{id}/files/{name}``: an artefact by its fixed name
  (``predictions.json``, ``frames.csv``, ``overlay.gif``, ``sheet.png`` ...);
* ``GET /api/health``, ``GET /api/model``.

Errors are ``{"detail": message}`` with a 4xx: 400 empty or malformed upload,
413 over the limit, 415 not a video/DICOM/image, 422 unreadable (the decoder's
words), 404 unknown job or artefact.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from uscl import __version__
from uscl.errors import UsclError
from uscl.infer.model import DETECT, SEGMENT, TASK_NAMES, LoadedModel, load_model
from uscl.serve.jobs import DONE, FAILED, Job, JobQueue
from uscl.serve.predictor import ARTEFACTS, PredictOptions, Predictor
from uscl.serve.uploads import EXTENSIONS, FIELD, UploadError, save_upload

STATIC = resources.files("uscl.serve") / "static"
UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FIELD],
    "properties": {FIELD: {"type": "string", "format": "binary",
                           "description": "a video, DICOM (cine or still) or image file"}}}}}}


def load_predictor(model: str | os.PathLike, fold: int | None = None, device: str = "auto",
                   options: PredictOptions | None = None) -> Predictor:
    """Load the model once (a run folder: its ensemble, or ``fold``; or one model.safetensors)."""
    from uscl.utils.device import resolve_device

    return Predictor(load_model(model, fold), resolve_device(device), options)


def create_app(model: str | os.PathLike | Predictor, *, fold: int | None = None, device: str = "auto",
               options: PredictOptions | None = None, max_upload_mb: float = 200.0, keep_results: int = 50,
               work_dir: str | Path | None = None) -> FastAPI:
    """The app around one loaded model (a path, loaded here with ``fold``/``device``/``options``, or a ready
    :class:`Predictor`); its jobs live under ``work_dir`` (default: a new temp folder), deleted at shutdown.

    >>> import uvicorn
    >>> uvicorn.run(create_app("runs/ft_pocus", fold=0), host="127.0.0.1", port=8765)
    """
    predictor = model if isinstance(model, Predictor) else load_predictor(model, fold, device, options)
    if max_upload_mb <= 0:
        raise UsclError(f"max_upload_mb must be positive, got {max_upload_mb}", param="max_upload_mb")
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="uscl-serve-"))
    queue = JobQueue(predictor, work, keep=keep_results)
    max_bytes = int(max_upload_mb * 2**20)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        queue.close()

    app = FastAPI(title="uscl serve", version=__version__, lifespan=lifespan,
                  description="Predictions of one fine-tuned uscl model on uploaded videos, DICOM and images.")
    app.state.queue, app.state.predictor, app.state.max_bytes = queue, predictor, max_bytes
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    _add_routes(app, queue, predictor, max_bytes)
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _add_routes(app: FastAPI, queue: JobQueue, predictor: Predictor, max_bytes: int) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "page.html").read_text(encoding="utf-8"))

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "version": __version__, "queued": queue.waiting}

    @app.get("/api/model")
    def model_info() -> dict:
        return model_summary(predictor, max_bytes)

    async def receive(request: Request) -> Job | JSONResponse:
        job = queue.new_job()
        try:
            saved = await save_upload(request.headers, request.stream(), job.upload_dir, max_bytes)
        except UploadError as exc:
            queue.discard(job)
            return _error(exc.status, exc.message)
        job.path, job.name, job.kind, job.size = saved.path, saved.name, saved.kind, saved.size
        return queue.submit(job)

    @app.post("/api/jobs", status_code=202, openapi_extra={"requestBody": UPLOAD_BODY})
    async def submit(request: Request):
        job = await receive(request)
        return job if isinstance(job, JSONResponse) else JSONResponse(job_view(job, queue), status_code=202)

    @app.post("/api/predict", openapi_extra={"requestBody": UPLOAD_BODY})
    async def predict(request: Request):
        job = await receive(request)
        if isinstance(job, JSONResponse):
            return job
        while not job.finished_event.is_set():
            await asyncio.sleep(0.05)
        if job.status == FAILED:
            return JSONResponse({"detail": job.error}, status_code=job.http_status, headers={"X-Uscl-Job": job.id})
        return JSONResponse(job.result(), headers={"X-Uscl-Job": job.id})

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        job = queue.get(job_id)
        if job is None:
            return _error(404, f"no job {job_id!r} (unknown, or removed: the server keeps the latest results only)")
        return JSONResponse(job_view(job, queue), status_code=job.http_status if job.status == FAILED else 200)

    @app.get("/api/jobs/{job_id}/files/{name}")
    def job_file(job_id: str, name: str):
        job = queue.get(job_id)
        path = job.artefact(name) if job is not None and name in ARTEFACTS else None
        if path is None or not path.is_file():
            return _error(404, f"job {job_id!r} has no file {name!r}")
        return FileResponse(path, filename=f"{Path(job.name).stem}_{name}" if name.endswith((".csv", ".json"))
                            else None)


def job_view(job: Job, queue: JobQueue) -> dict:
    """What ``GET /api/jobs/{id}`` answers: status and progress, and when done the JSON and artefact URLs."""
    now = job.finished or time.time()
    return {
        "id": job.id, "input": job.name, "kind": job.kind, "bytes": job.size,
        "status": job.status, "stage": job.stage, "position": queue.position(job),
        "frames_done": job.done_frames, "frames_total": job.total_frames,
        "error": job.error,
        "seconds": round(now - (job.started or now), 3),
        "files": {n: f"/api/jobs/{job.id}/files/{n}" for n in job.files},
        "result": job.result() if job.status == DONE else None,
    }


def model_summary(predictor: Predictor, max_bytes: int) -> dict:
    m: LoadedModel = predictor.model
    return {
        "task": m.task, "task_name": TASK_NAMES.get(m.task, m.task), "classes": m.classes,
        "labels": m.labels if m.task in (SEGMENT, DETECT) else None,
        "arch": m.preprocessing.arch, "folds": [f.fold for f in m.folds], "ensemble": m.is_ensemble,
        "description": m.describe(), "explain": predictor.explains, "device": str(predictor.device),
        "max_upload_bytes": max_bytes, "extensions": list(EXTENSIONS), "field": FIELD,
    }
