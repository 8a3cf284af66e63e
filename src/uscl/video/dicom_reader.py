"""DICOM files (ultrasound cine loops and single frames) read with pydicom.

Colour is normalised to what a viewer shows: YBR → RGB (pydicom's decoders),
PALETTE COLOR through its lookup table, MONOCHROME1 inverted so that bright
is bright, more-than-8-bit grey windowed (VOI LUT or window centre/width where
the file has one) and scaled to 0–255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder

from uscl.video.decoded import DecodedVideo, DecodeError, kept_rate, to_channels
from uscl.video.sampling import fps_indices

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def dicom_fps(ds) -> float | None:
    """Frame rate from FrameTime (ms), CineRate or RecommendedDisplayFrameRate."""
    for key, to_fps in (("FrameTime", lambda v: 1000.0 / v), ("CineRate", float),
                        ("RecommendedDisplayFrameRate", float)):
        value = ds.get(key)
        try:
            value = float(value) if value not in (None, "") else 0.0
        except (TypeError, ValueError):
            continue
        if value > 0:
            fps = to_fps(value)
            if 0 < fps < 1000:
                return round(fps, 4)
    return None


def dicom_times(ds, n: int, fps: float | None) -> list[float] | None:
    """Per-frame times (s): FrameTimeVector where it fits, else a fixed rate."""
    vector = ds.get("FrameTimeVector")
    if vector is not None:
        try:
            values = list(vector) if isinstance(vector, (list, tuple)) or type(vector).__name__ == "MultiValue" else [vector]
            steps = [float(v) for v in values]
        except (TypeError, ValueError):
            steps = []
        if len(steps) == n and all(s >= 0 for s in steps):
            return list(np.cumsum(steps) / 1000.0)
    if fps:
        return [i / fps for i in range(n)]
    return None


_IMAGE_ATTRIBUTES = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation")
_PIXEL_DATA_TAG = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF


def _sop_class(ds):
    """The SOP Class UID of the object (from the dataset, else the file meta), or None."""
    uid = ds.get("SOPClassUID")
    if uid is None and hasattr(ds, "file_meta"):
        uid = ds.file_meta.get("MediaStorageSOPClassUID")
    return uid


def _cut_short(ds, size: int) -> str | None:
    """Why the parsed ``ds`` shows that its file (``size`` bytes) was cut short, or None.

    pydicom stops silently at the end of the file, even inside an element, so
    the signs are read from the elements it found: a value that needs bytes
    past the end, a few bytes left that cannot be an element, a file meta
    group longer than the file, image attributes with no pixel data after them.
    """
    meta = getattr(ds, "file_meta", None)
    last_end = None
    for group in (meta, ds):
        for elem in group.elements() if group is not None else ():
            tell, length = getattr(elem, "value_tell", None), getattr(elem, "length", None)
            if tell is None or length is None or length == _UNDEFINED_LENGTH:
                last_end = None  # a converted or undefined-length element: its end is not known here
                continue
            end = tell + length
            if end > size:
                part = "pixel data" if int(elem.tag) == _PIXEL_DATA_TAG else f"header (element {elem.tag})"
                return f"the file ends inside its {part}: {size} bytes, {end} needed"
            last_end = end
    if last_end is not None and 0 < size - last_end < 8:
        return f"the file ends inside an element header ({size - last_end} stray bytes at the end)"
    group_length = meta.get("FileMetaInformationGroupLength") if meta is not None else None
    if isinstance(group_length, int) and 144 + group_length > size:
        return f"the file ends inside its file meta header ({size} bytes, the header alone needs {144 + group_length})"
    if not any(tag in ds for tag in _PIXEL_TAGS):
        if len(ds) == 0:
            return "no data elements after the file meta header"
        if _sop_class(ds) is None:
            return "no SOP Class UID and no pixel data found"
        present = [a for a in _IMAGE_ATTRIBUTES if a in ds]
        if present:
            return f"it has image attributes ({', '.join(present)}) but no pixel data after them"
        name = getattr(_sop_class(ds), "name", "")
        if "Image Storage" in str(name):
            return f"it is an image object ({name}) but the file holds no pixel data"
    return None


def _decode_pixels(ds) -> np.ndarray:
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is not None and ts.is_compressed:
        try:
            decoder = get_decoder(ts)
        except NotImplementedError:
            raise DecodeError(f"compressed DICOM ({ts.name}): pydicom has no decoder for this transfer syntax") from None
        if not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
            raise DecodeError(
                f"compressed DICOM ({ts.name}) and no decoder for it is installed "
                f"(install one of: {needs})"
            )
    try:
        return ds.pixel_array
    except (RuntimeError, NotImplementedError, ValueError, AttributeError, KeyError, TypeError) as exc:
        raise DecodeError(f"DICOM pixel data could not be decoded ({exc})") from None


def _to_uint8(arr: np.ndarray, ds, photometric: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        if arr.dtype != np.uint8:  # 16-bit LUT entries
            arr = (arr.astype(np.float64) / max(1.0, float(arr.max())) * 255.0)
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8) if arr.dtype != np.uint8 else arr
    if arr.dtype == np.uint8 and photometric != "MONOCHROME1":
        return arr
    if arr.dtype == np.uint8:  # MONOCHROME1, 8-bit
        return 255 - arr
    data = arr.astype(np.float64)
    if photometric.startswith("MONOCHROME"):
        data = apply_modality_lut(arr, ds).astype(np.float64)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            data = apply_voi_lut(data, ds).astype(np.float64)
    lo, hi = float(data.min()), float(data.max())
    scaled = (data - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(data)
    if photometric == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def read_dicom(path: str | Path, *, channels: str = "grey", fps: float | None = None) -> DecodedVideo:
    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError:
        try:  # a file without the 128-byte preamble
            ds = pydicom.dcmread(str(path), force=True)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a skip reason
            raise DecodeError(f"DICOM file is truncated or unreadable ({exc})") from None
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"DICOM file is truncated or unreadable ({exc})") from None
    cut = _cut_short(ds, Path(path).stat().st_size)
    if cut is not None:
        raise DecodeError(f"DICOM file is truncated or unreadable: {cut} (a copy cut short? copy it again)")
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise DecodeError("DICOM file has no pixel data (a report, structured report or other non-image object)")
    if "Rows" not in ds or "Columns" not in ds:
        raise DecodeError("DICOM file has pixel data but no Rows/Columns")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper().strip()
    arr = _decode_pixels(ds)
    n_declared = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if n_declared == 1 or arr.ndim == (2 if samples == 1 else 3):
        arr = arr[None]
    # pydicom's decoders return RGB for YBR data; palette and grey are mapped here
    arr = _to_uint8(arr, ds, "RGB" if photometric.startswith("YBR") else photometric)
    n = int(arr.shape[0])
    if n == 0:
        raise DecodeError("DICOM file has zero frames")
    orig_fps = dicom_fps(ds) if n > 1 else None
    times = dicom_times(ds, n, orig_fps) if n > 1 else None
    notes: list[str] = []
    idx = list(range(n))
    if fps and n > 1:
        if times is None:
            notes.append("frame rate unknown (no FrameTime/CineRate): fps not applied, all frames kept")
        else:
            idx = fps_indices(times, fps)
    frames = np.stack([to_channels(arr[i], channels) for i in idx])
    kept_times = [times[i] for i in idx] if times else None
    return DecodedVideo(
        frames=frames,
        kind="dicom",
        orig_num_frames=n,
        orig_height=int(arr.shape[1]),
        orig_width=int(arr.shape[2]),
        orig_fps=orig_fps,
        fps=kept_rate(kept_times, orig_fps, n, len(idx)) if n > 1 else None,
        notes=notes,
        kept_indices=[int(i) for i in idx],
    )
