"""Small media files written from arrays: every container and DICOM flavour the readers take.

Tests, benchmarks and demos use these to make their own inputs (no data
downloads): ``write_video(path, frames, fps)`` picks a codec by extension,
``write_dicom(path, frames, ...)`` builds an uncompressed DICOM with pydicom.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

# extension → (codec, pixel format, rate that the codec accepts)
VIDEO_CODECS: dict[str, tuple[str, str]] = {
    ".mp4": ("h264", "yuv420p"),
    ".m4v": ("h264", "yuv420p"),
    ".mov": ("mjpeg", "yuvj420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".mpeg": ("mpeg1video", "yuv420p"),
    ".mpg": ("mpeg2video", "yuv420p"),
    ".mkv": ("h264", "yuv420p"),
}


def moving_frames(n: int = 8, height: int = 48, width: int = 48, seed: int = 0, margin: int = 0) -> np.ndarray:
    """uint8 (n, H, W, 3): a bright square moving over noise, frame i brighter by i·8
    (so order and count can be checked after lossy coding); ``margin`` px of black around."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, height, width, 3), np.uint8)
    h, w = height - 2 * margin, width - 2 * margin
    for i in range(n):
        img = rng.integers(40, 90, size=(h, w)).astype(np.int32) + i * 8
        s = max(2, min(h, w) // 4)
        y, x = (i * 3) % max(1, h - s), (i * 5) % max(1, w - s)
        img[y : y + s, x : x + s] = 230
        out[i, margin : margin + h, margin : margin + w] = np.clip(img, 0, 255)[..., None]
    return out


def write_video(path: str | Path, frames: np.ndarray, fps: int = 25, *, faststart: bool = False) -> Path:
    """Encode uint8 (T, H, W, 3) frames; the codec follows the extension (gif via PIL)."""
    path = Path(path)
    frames = np.asarray(frames, np.uint8)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if path.suffix.lower() == ".gif":
        imgs = [Image.fromarray(f) for f in frames]
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
        return path
    codec, pix_fmt = VIDEO_CODECS[path.suffix.lower()]
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = pix_fmt
        if codec == "h264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        elif codec in ("mpeg4", "mpeg1video", "mpeg2video", "mjpeg"):
            stream.options = {"qscale": "2"}
            stream.codec_context.qmin = 1
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_dicom(
    path: str | Path,
    frames: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    frame_time_ms: float | None = None,
    cine_rate: float | None = None,
    palette: np.ndarray | None = None,
    pixel_data: bool = True,
    transfer_syntax: str | None = None,
) -> Path:
    """An uncompressed DICOM (US Multi-frame) from (T, H, W) or (T, H, W, 3) frames.

    ``palette``: (256, 3) uint8 LUT for PALETTE COLOR; ``pixel_data=False``
    writes an object without pixels; ``transfer_syntax`` labels the file with
    another syntax (its pixel bytes are then just encapsulated garbage: for
    testing what happens when no decoder exists).
    """
    frames = np.asarray(frames)
    n = frames.shape[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.3.1")  # US multi-frame
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(transfer_syntax) if transfer_syntax else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientID = "synthetic"
    if frame_time_ms:
        ds.FrameTime = frame_time_ms
    if cine_rate:
        ds.CineRate = int(cine_rate)
    if pixel_data:
        colour = frames.ndim == 4
        ds.Rows, ds.Columns = int(frames.shape[1]), int(frames.shape[2])
        ds.SamplesPerPixel = 3 if colour else 1
        ds.PhotometricInterpretation = photometric
        if colour:
            ds.PlanarConfiguration = 0
        bits = 16 if frames.dtype == np.uint16 else 8
        ds.BitsAllocated = ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 0
        if n > 1:
            ds.NumberOfFrames = n
        if palette is not None:
            for ch, name in enumerate(("Red", "Green", "Blue")):
                setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 8])
                setattr(ds, f"{name}PaletteColorLookupTableData", palette[:, ch].astype(np.uint8).tobytes())
        if transfer_syntax:
            ds.PixelData = encapsulate([b"\xff\xd8not really compressed\xff\xd9"] * n)
        else:
            ds.PixelData = np.ascontiguousarray(frames).tobytes()
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path
