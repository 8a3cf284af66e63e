"""`uscl serve`: a local web page and HTTP API around one fine-tuned model."""

from __future__ import annotations

import argparse
import sys

NAME = "serve"
ORDER = 55
HELP = "a local web app and HTTP API: upload a clip, DICOM or image, see the prediction and its overlays"
DESCRIPTION = """\
Serve a model from `uscl finetune` on a local web page (FastAPI on uvicorn).
MODEL is a run folder (the ensemble of its folds, or one fold with --fold) or
one model.safetensors; it is loaded once. The page takes a dropped or chosen
video, DICOM cine/still or image and shows what `uscl predict --explain` makes
of it: the video-level prediction with per-class probabilities, a per-frame
plot, the Grad-CAM overlay clip and contact sheet (a segmentation model: the
mask overlay; a detection model: its boxes and masks), with the CSV and JSON
to download. Uploads are processed one at a time, in turn.

API (docs at /docs):
  curl -F file=@clip.mp4 http://127.0.0.1:8765/api/predict
returns the JSON `uscl predict MODEL clip.mp4 --out DIR --explain` writes to
DIR/predictions.json. POST /api/jobs (same upload) returns a job id to poll at
GET /api/jobs/ID; its files at GET /api/jobs/ID/files/NAME.

Security: it listens on 127.0.0.1 (this machine only) unless --host says
otherwise, with no authentication: bind to another address only on a network
you trust. Uploads over --max-upload-mb are refused while they stream in; each
upload is saved under a server-chosen name in a temporary folder and deleted
when its job ends; no file name or path from the client is used as a path; the
results of the latest --keep-results jobs are kept, all deleted at exit.

example:
  uscl serve runs/ft_pocus --fold 0
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="`uscl finetune` run folder, fold folder or model.safetensors")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--fold", type=int, metavar="K", help="use fold K of a run folder (default: the ensemble)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, metavar="MB",
                   help="largest upload accepted (default 200)")
    p.add_argument("--explain", action=argparse.BooleanOptionalAction, default=True,
                   help="Grad-CAM overlay clip and contact sheet of a classification model (default on)")
    p.add_argument("--keep-results", type=int, default=50, metavar="N",
                   help="keep the files of the latest N jobs (default 50); older ones are deleted")
    p.add_argument("--batch-size", type=int, default=None, help="frames per forward pass (default as `uscl predict`)")
    p.add_argument("--score-threshold", type=float, default=0.5, metavar="S",
                   help="detection models: keep detections scoring at least S (default 0.5)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no bf16 autocast on CUDA")


def loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from uscl.errors import UsclError

    try:
        import uvicorn

        from uscl.serve import PredictOptions, create_app, load_predictor
    except ImportError as exc:  # fastapi/uvicorn/python-multipart are dependencies; a broken install says so
        raise UsclError(f"`uscl serve` needs fastapi, uvicorn and python-multipart ({exc}); "
                        "pip install fastapi uvicorn python-multipart") from None
    if args.batch_size is not None and args.batch_size < 1:
        raise UsclError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0.0 <= args.score_threshold <= 1.0:
        raise UsclError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if not 0 < args.port < 65536:
        raise UsclError(f"--port must be in 1..65535, got {args.port}")
    options = PredictOptions(explain=args.explain, batch_size=args.batch_size, score_threshold=args.score_threshold,
                             amp=args.amp)
    predictor = load_predictor(args.model, args.fold, args.device, options)
    app = create_app(predictor, max_upload_mb=args.max_upload_mb, keep_results=args.keep_results)
    m = predictor.model
    print(f"model: {m.describe()} ({m.task}); device {predictor.device}"
          + ("" if predictor.explains or m.task != "classify" else "; no Grad-CAM (--no-explain)"), file=sys.stderr)
    if not loopback(args.host):
        print(f"warning: listening on {args.host}, reachable from other machines; uscl serve has no "
              "authentication: use it only on a network you trust", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"open http://{shown}:{args.port}/ (API: POST /api/predict, docs at /docs); Ctrl-C stops",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
