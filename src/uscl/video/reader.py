"""One entry point for every input kind: path in, kept frames out."""

from __future__ import annotations

from pathlib import Path

from uscl.video.av_reader import read_av
from uscl.video.decoded import DecodedVideo, DecodeError, kept_rate
from uscl.video.dicom_reader import read_dicom
from uscl.video.formats import is_image_name, kind_of, natural_key
from uscl.video.image_reader import read_frame_folder, read_image
from uscl.video.sampling import even_indices


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder, in natural name order (hidden files ignored)."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_name(p)]
    return sorted(files, key=lambda p: natural_key(p.name))


def read_frames(
    path: str | Path,
    *,
    channels: str = "grey",
    fps: float | None = None,
    max_frames: int | None = None,
    kind: str | None = None,
    files: list[Path] | None = None,
    size: int | None = None,
    threads: int | None = None,
) -> DecodedVideo:
    """Decode ``path`` (a video, DICOM, image, or a folder of frames) at native size.

    ``fps`` keeps the frames nearest to multiples of 1/fps (where the source's
    timing is known), then ``max_frames`` keeps that many evenly spaced.
    ``size``: let the video decoder scale frames to size×size on the way out
    (videos only; other kinds always come at native size). ``threads``: the video decoder's
    threads (default FFmpeg's: one per core).
    ``video.kept_indices`` says which decoded source frames were kept (for a
    frame folder: positions in ``files``).
    Raises :class:`DecodeError` with the reason when nothing usable comes out.
    """
    path = Path(path)
    if channels not in ("grey", "rgb"):
        raise ValueError(f"channels must be 'grey' or 'rgb', got {channels!r}")
    if kind is None:
        kind = "frames" if path.is_dir() else kind_of(path)
    if kind is None:
        raise DecodeError(f"unsupported file type {path.suffix or '(no extension)'}")
    if kind != "frames":
        if not path.is_file():
            raise DecodeError("file not found")
        if path.stat().st_size == 0:
            raise DecodeError("empty file (0 bytes)")

    if kind == "video":
        video = read_av(path, channels=channels, fps=fps, size=size, threads=threads)
    elif kind == "dicom":
        video = read_dicom(path, channels=channels, fps=fps)
    elif kind == "image":
        video = read_image(path, channels=channels)
    elif kind == "frames":
        files = list(files) if files is not None else frame_files(path)
        if not files:
            raise DecodeError("folder holds no image files")
        n_all = len(files)
        chosen = even_indices(n_all, max_frames)
        video = read_frame_folder([files[i] for i in chosen], channels=channels)
        video.kept_indices = [chosen[i] for i in video.kept_indices or []]  # into ``files``
        video.orig_num_frames = n_all - len(video.dropped)  # the readable frames, as far as they were read
        if fps:
            video.notes.append("frame folder has no timing: fps not applied")
        return video
    else:
        raise ValueError(f"unknown input kind {kind!r}")

    if max_frames is not None and video.num_frames > max_frames:
        n_before = video.num_frames
        idx = even_indices(n_before, max_frames)
        video.frames = video.frames[idx]
        if video.kept_indices is not None:
            video.kept_indices = [video.kept_indices[i] for i in idx]
        if video.fps:
            video.fps = kept_rate(None, video.fps, n_before, len(idx))
    return video
