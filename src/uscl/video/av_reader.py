"""Video files (mp4, avi, mov, mpeg, gif, ...) decoded with PyAV (FFmpeg)."""

from __future__ import annotations

from pathlib import Path
from typing import Collection

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from uscl.video.decoded import DecodedVideo, DecodeError, kept_rate
from uscl.video.sampling import MonotonicClock, NearestTimeSampler


_MAX_BAD_PACKETS_BEFORE_FIRST_FRAME = 64


def _stream_fps(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        try:
            value = float(rate) if rate else 0.0
        except (TypeError, ZeroDivisionError):
            value = 0.0
        if 0 < value < 1000:
            return value
    return None


class _KeptFrames:
    """The kept frames, copied into one array sized by the frames the stream says it has (all kept) or
    the indices asked for: no list of frames stacked at the end, so a long video is in memory once, not
    twice. Without a count (fps sampling, a container that does not say), or past it, a list."""

    def __init__(self, expected: int | None):
        self.expected = expected if expected and expected > 0 else None
        self.buf: np.ndarray | None = None
        self.n = 0
        self.extra: list[np.ndarray] = []

    def __len__(self) -> int:
        return self.n + len(self.extra)

    def append(self, arr: np.ndarray) -> None:
        if self.buf is None and self.expected is not None:
            try:  # pages never written are never resident: a count too high costs address space only
                self.buf = np.empty((self.expected, *arr.shape), arr.dtype)
            except (MemoryError, ValueError):
                self.expected = None
        if self.buf is not None and not self.extra and self.n < len(self.buf):
            self.buf[self.n] = arr
            self.n += 1
        else:
            self.extra.append(arr)

    def array(self) -> np.ndarray:
        """(T, H, W[, C]), the same as ``np.stack`` of the frames in order."""
        if not self.extra:
            return self.buf[: self.n]
        if self.buf is None:
            return np.stack(self.extra)
        return np.concatenate([self.buf[: self.n], np.stack(self.extra)])


def read_av(path: str | Path, *, channels: str = "grey", fps: float | None = None,
            size: int | None = None, indices: Collection[int] | None = None,
            threads: int | None = None) -> DecodedVideo:
    """Decode every frame; keep all, or those nearest to multiples of 1/fps.

    ``indices`` (instead of ``fps``): keep exactly the frames of these decode
    indices, so a mask video is cut to the frames kept of its image video while
    only those are held in memory (``orig_num_frames`` still counts all).

    Frames are converted (FFmpeg's swscale: 'gray' is the 601 luma, 'rgb24')
    only when kept; with ``size`` the same swscale call also scales them to
    size×size (bilinear, area-aware when shrinking), about 6× cheaper than
    scaling the native frames afterwards. A stream that breaks after some frames decoded (a truncated
    file) keeps what decoded and says so in ``notes``; one with no frame at all
    raises :class:`DecodeError`.

    ``threads``: the decoder's threads (FFmpeg's default, 0, is one per core, slice threading:
    about 1.4 cores on H.264 here); `uscl prepare` passes 1 and runs one process per core instead.
    The frames are the same either way.
    """
    pix_fmt = "gray" if channels == "grey" else "rgb24"
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"not a readable video ({_reason(exc)})") from None
    with container:
        if not container.streams.video:
            raise DecodeError("the file has no video stream")
        stream = container.streams.video[0]
        if threads:
            stream.codec_context.thread_count = threads
        # no frame threading: it hides decode errors of corrupt packets, and
        # parallelism belongs across videos rather than inside one
        native_fps = _stream_fps(stream)
        clock = MonotonicClock(native_fps)
        wanted = frozenset(indices) if indices is not None else None
        sampler = NearestTimeSampler(fps) if fps and wanted is None else None
        kept = _KeptFrames(len(wanted) if wanted is not None else None if sampler else stream.frames)
        kept_idx: list[int] = []
        kept_times: list[float] = []
        native: tuple[int, int] | None = None
        n_decoded = 0
        error: Exception | None = None

        # one reformatter for the whole video: frame.to_ndarray(format=...) makes a new swscale
        # context for every frame, which cost more than decoding (same pixels, 2-2.5x slower)
        reformatter = VideoReformatter()

        def keep(frame, t: float, i: int) -> None:
            if size:
                out = reformatter.reformat(frame, format=pix_fmt, width=size, height=size, interpolation="BILINEAR")
            elif (frame.height, frame.width) != native:  # a mid-stream size change: match the first frame
                out = reformatter.reformat(frame, format=pix_fmt, height=native[0], width=native[1])
            else:
                out = reformatter.reformat(frame, format=pix_fmt)
            arr = out.to_ndarray()
            kept.append(arr)
            kept_times.append(t)
            kept_idx.append(i)

        bad_packets = 0
        bad_reason: Exception | None = None
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except (av.FFmpegError, ValueError) as exc:
                    # a corrupt or cut packet: skip it, keep decoding what follows
                    bad_packets += 1
                    bad_reason = bad_reason or exc
                    if n_decoded == 0 and bad_packets >= _MAX_BAD_PACKETS_BEFORE_FIRST_FRAME:
                        break
                    continue
                for frame in decoded:
                    t = clock(frame.time)
                    if native is None:
                        native = (frame.height, frame.width)
                    n_decoded += 1
                    if wanted is not None:
                        if n_decoded - 1 in wanted:
                            keep(frame, t, n_decoded - 1)
                    elif sampler is None:
                        keep(frame, t, n_decoded - 1)
                    else:
                        for f, ft, fi in sampler.push(t, (frame, t, n_decoded - 1)):
                            keep(f, ft, fi)
        except (av.FFmpegError, EOFError, ValueError, MemoryError) as exc:
            error = exc
    if not kept:
        if error is not None or bad_reason is not None:
            raise DecodeError(f"no frame could be decoded ({_reason(error or bad_reason)})")
        raise DecodeError("the video has no frames")
    frames = kept.array()
    if frames.ndim == 3:
        frames = frames[..., None]
    notes = []
    if error is not None:
        notes.append(f"decoding stopped after {n_decoded} frames ({_reason(error)}); kept what decoded")
    if bad_packets:
        notes.append(f"{bad_packets} undecodable packet(s) skipped ({_reason(bad_reason)}; truncated or corrupt "
                     f"file?); kept the {n_decoded} frames that decoded")
    return DecodedVideo(
        frames=frames,
        kind="video",
        orig_num_frames=n_decoded,
        orig_height=native[0],
        orig_width=native[1],
        orig_fps=round(native_fps, 4) if native_fps else None,
        fps=kept_rate(kept_times, native_fps, n_decoded, len(kept)),
        notes=notes,
        kept_indices=kept_idx,
    )


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words, without the errno and the repeated file name."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    return str(exc).strip() or type(exc).__name__
