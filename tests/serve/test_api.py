"""`uscl serve`'s HTTP API against a real uvicorn server: the JSON of `uscl predict`, bad inputs, the queue."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from uscl.cli import main

httpx = pytest.importorskip("httpx", reason="the API tests need httpx (the test extra: pip install -e '.[test]')")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _post(url: str, name: str, data: bytes, path: str = "/api/predict", timeout: float = 120) -> httpx.Response:
    return httpx.post(url + path, files={"file": (name, data, "application/octet-stream")}, timeout=timeout)


def _cli_json(monkeypatch, tmp_path, model, clip, *flags) -> tuple[dict, os.PathLike]:
    """predictions.json of `uscl predict MODEL <clip name> --out DIR`, run where the clip is (so the input is
    named as the upload is)."""
    out = tmp_path / "cli"
    monkeypatch.chdir(clip.parent)
    assert main(["predict", str(model), clip.name, "--out", str(out), "--device", "cpu", "--quiet", *flags]) == 0
    return json.loads((out / "predictions.json").read_text()), out


def _healthy(url: str) -> None:
    assert httpx.get(url + "/api/health", timeout=10).json()["status"] == "ok"


def test_api_predict_returns_the_json_uscl_predict_writes(server, serve_data, clip_of, monkeypatch, tmp_path):
    clip = clip_of(serve_data)
    r = _post(server.url, clip.name, clip.read_bytes())
    assert r.status_code == 200, r.text
    want, out = _cli_json(monkeypatch, tmp_path, serve_data / "ft", clip, "--explain")
    assert r.json() == want  # the same JSON, Grad-CAM summary included
    job = httpx.get(f"{server.url}/api/jobs/{r.headers['x-uscl-job']}").json()
    assert job["status"] == "done" and job["result"] == want and job["input"] == clip.name
    assert set(job["files"]) >= {"predictions.json", "frames.csv", "videos.csv", "sheet.png", "overlay.mp4",
                                 "overlay.gif", "plot.png"}
    assert httpx.get(server.url + job["files"]["frames.csv"]).text == (out / "frames.csv").read_text()
    for name in ("sheet.png", "overlay.gif", "plot.png"):
        got = httpx.get(server.url + job["files"][name])
        assert got.status_code == 200 and got.headers["content-type"].startswith("image/") and len(got.content) > 500
    assert not any((server.work_dir / "uploads").iterdir())  # the upload is gone once its job ended


def test_jobs_report_progress_then_the_result(server, serve_data, clip_of):
    clip = clip_of(serve_data, "regular")
    r = _post(server.url, clip.name, clip.read_bytes(), path="/api/jobs")
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running", "done")
    job_id, seen = r.json()["id"], set()
    for _ in range(600):
        job = httpx.get(f"{server.url}/api/jobs/{job_id}").json()
        seen.add(job["stage"])
        if job["status"] == "done":
            break
        time.sleep(0.05)
    assert job["status"] == "done" and job["result"]["inputs"][0]["input"] == clip.name
    assert seen <= {"queued", "decoding", "predicting", "explaining", "writing", "done"} and "done" in seen
    assert job["result"]["inputs"][0]["num_frames"] == 4
    assert httpx.get(f"{server.url}/api/jobs/{'0' * 32}").status_code == 404
    assert httpx.get(f"{server.url}/api/jobs/{job_id}/files/cam.npy").status_code == 404  # not an artefact
    assert httpx.get(f"{server.url}/api/jobs/{job_id}/files/..%2F..%2Fmodel.json").status_code == 404


@pytest.mark.parametrize("name, data, status, words", [
    ("notes.txt", b"just some text\n", 415, "not a video, DICOM or image"),
    ("empty.mp4", b"", 400, "empty (0 bytes)"),
    ("text.mp4", b"just some text, not a video\n" * 20, 422, "could not be read"),
    ("noext", b"no extension and no DICOM magic", 415, "not a video, DICOM or image"),
])
def test_bad_input_is_a_clear_4xx_and_the_server_goes_on(server, name, data, status, words):
    r = _post(server.url, name, data)
    assert r.status_code == status and words in r.json()["detail"], r.text
    r = _post(server.url, name, data, path="/api/jobs")  # the page's way: refused at once, or a failed job
    if r.status_code == 202:
        for _ in range(400):
            job = httpx.get(f"{server.url}/api/jobs/{r.json()['id']}")
            if job.json()["status"] == "failed":
                break
            time.sleep(0.05)
        r = job
        assert r.json()["status"] == "failed" and words in r.json()["error"]
    else:
        assert words in r.json()["detail"]
    assert r.status_code == status
    _healthy(server.url)


def test_a_truncated_video_is_422_with_the_decoders_words(server, serve_data, clip_of):
    data = clip_of(serve_data).read_bytes()
    r = _post(server.url, "cut.mp4", data[: len(data) // 2])
    assert r.status_code == 422 and "not a readable video" in r.json()["detail"], r.text
    assert _post(server.url, "whole.mp4", data).status_code == 200  # still serving


def test_a_client_path_is_never_used_as_a_path(server, serve_data):
    still = (serve_data / "still.png").read_bytes()
    for evil in ("../../../../tmp/evil_upload.png", "..\\..\\evil_upload.png", "/etc/evil_upload.png"):
        r = _post(server.url, evil, still)
        assert r.status_code == 200 and r.json()["inputs"][0]["input"] == "evil_upload.png"
        assert r.json()["explain"]["inputs"][0]["folder"] == "explain/evil_upload"
    assert not os.path.exists("/tmp/evil_upload.png") and not os.path.exists("/etc/evil_upload.png")
    files = [p for p in server.work_dir.rglob("*") if p.is_file()]
    assert files and all(p.resolve().is_relative_to(server.work_dir.resolve()) for p in files)
    assert not any("evil" in p.name for p in files)  # saved as input.png, results under the job id


def test_two_uploads_at_once_both_succeed(server, serve_data, clip_of):
    clips = [clip_of(serve_data, "covid"), clip_of(serve_data, "pneumonia")]
    out: dict[int, httpx.Response] = {}

    def send(i: int) -> None:
        out[i] = _post(server.url, clips[i].name, clips[i].read_bytes())

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert [out[i].status_code for i in range(2)] == [200, 200]
    assert [out[i].json()["inputs"][0]["input"] for i in range(2)] == [c.name for c in clips]
    assert out[0].headers["x-uscl-job"] != out[1].headers["x-uscl-job"]


def test_model_and_health(server):
    m = httpx.get(server.url + "/api/model").json()
    assert m["task"] == "classify" and m["classes"] == ["covid", "pneumonia", "regular"] and m["explain"]
    assert m["arch"] == "resnet18" and m["ensemble"] and m["max_upload_bytes"] == 200 * 2**20
    assert "<title>uscl serve</title>" in httpx.get(server.url + "/").text
    assert httpx.get(server.url + "/static/app.js").status_code == 200
    assert "/api/predict" in httpx.get(server.url + "/openapi.json").json()["paths"]


def test_upload_limit_kept_results_and_cleanup(serve_data, live_server):
    still = (serve_data / "still.png").read_bytes()
    assert len(still) < 4000
    with live_server(serve_data / "ft", max_upload_mb=0.005, keep_results=1) as s:
        r = _post(s.url, "big.mp4", b"\0" * 20000)
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]
        first = _post(s.url, "still.png", still)
        assert first.status_code == 200 and first.json()["inputs"][0]["kind"] == "image"
        assert "overlay.png" in httpx.get(f"{s.url}/api/jobs/{first.headers['x-uscl-job']}").json()["files"]
        assert _post(s.url, "still2.png", still).status_code == 200
        assert httpx.get(f"{s.url}/api/jobs/{first.headers['x-uscl-job']}").status_code == 404  # only the latest kept
        assert len(list((s.work_dir / "results").iterdir())) == 1
    assert not s.work_dir.exists()  # everything removed at shutdown


def test_a_segmentation_model_shows_its_mask_overlay(serve_data, clip_of, live_server, monkeypatch, tmp_path):
    clip = clip_of(serve_data)
    with live_server(serve_data / "seg" / "model.safetensors") as s:
        assert httpx.get(s.url + "/api/model").json()["task"] == "segment"
        r = _post(s.url, clip.name, clip.read_bytes())
        assert r.status_code == 200, r.text
        job = httpx.get(f"{s.url}/api/jobs/{r.headers['x-uscl-job']}").json()
        assert {"overlay.gif", "overlay.mp4", "segments.csv", "plot.png"} <= set(job["files"])
        assert httpx.get(s.url + job["files"]["overlay.gif"]).content[:4] == b"GIF8"
    want, _ = _cli_json(monkeypatch, tmp_path, serve_data / "seg" / "model.safetensors", clip)
    assert r.json() == want


@pytest.fixture(scope="module")
def detector_run(mask_store, tmp_path_factory):
    """A tiny real `finetune --task detect` run (frozen trunk, 1 epoch, fold 0 of 3) and a synth clip."""
    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.train import finetune
    from uscl.synth.generate import generate

    root = tmp_path_factory.mktemp("serve_detect")
    finetune(FinetuneConfig(store=str(mask_store), out=str(root / "run"), task="detect", mode="frozen", epochs=1,
                            folds=3, image_size=64, batch_size=8, device="cpu", max_frames_per_video=2,
                            only_folds=[0]), log=lambda *a: None)
    generate(root / "synth", videos_per_class=1, frames=3, size=48, fps=4.0, seed=1, classes="covid")
    return root


@pytest.mark.filterwarnings("ignore:RCNN always returns:UserWarning")
def test_a_detection_model_shows_its_boxes(detector_run, live_server, monkeypatch, tmp_path):
    clip = sorted((detector_run / "synth").rglob("*.mp4"))[0]
    with live_server(detector_run / "run") as s:
        assert httpx.get(s.url + "/api/model").json()["task"] == "detect"
        r = _post(s.url, clip.name, clip.read_bytes())
        assert r.status_code == 200, r.text
        job = httpx.get(f"{s.url}/api/jobs/{r.headers['x-uscl-job']}").json()
        assert {"overlay.gif", "overlay.mp4", "detections.csv", "plot.png"} <= set(job["files"])
        assert httpx.get(s.url + job["files"]["overlay.gif"]).content[:4] == b"GIF8"
        assert httpx.get(s.url + job["files"]["detections.csv"]).text.startswith("input,frame,class,score")
        _healthy(s.url)
    want, _ = _cli_json(monkeypatch, tmp_path, detector_run / "run", clip)
    assert r.json() == want
