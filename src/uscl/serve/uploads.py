"""Uploads: a multipart field ``file`` streamed to a server-named file, with a size limit.

Nothing the client sends is used as a path. The file is written as ``input<ext>``
inside a fresh temporary folder, ``<ext>`` being the client's extension only when
it is one uscl reads (lower-cased, from :mod:`uscl.video.formats`); the client's
file name, reduced to its last component and printable characters, is only the
*display name* (the ``input`` of the prediction JSON). The limit is enforced while
the body streams in (413 as soon as it is passed), not after buffering it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header

from uscl.video.formats import DICOM_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, kind_of

FIELD = "file"
EXTENSIONS = tuple(sorted(VIDEO_EXTENSIONS | IMAGE_EXTENSIONS | DICOM_EXTENSIONS))
MULTIPART_SLACK = 1 << 20  # bytes of multipart framing (boundaries, headers, other fields) allowed beyond the limit
MAX_NAME = 120


class UploadError(Exception):
    """A rejected upload: the HTTP status and the message shown to the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class SavedUpload:
    path: Path  # server-chosen: <folder>/input<ext>
    name: str  # display name from the client's file name (never a path on the server)
    kind: str  # video | dicom | image
    size: int  # bytes


def display_name(filename: str | None) -> str:
    """The client's file name reduced to its last path component (either slash), printable, at most 120 chars."""
    base = re.split(r"[/\\]", filename or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip().lstrip(".") or "upload"
    return base if len(base) <= MAX_NAME else base[: MAX_NAME - 10] + "…" + base[-9:]


def safe_extension(name: str) -> str | None:
    """The lower-cased extension of ``name`` when uscl reads it, "" for none (maybe DICOM), else None."""
    dot = name.rfind(".")
    if dot <= 0:
        return ""
    ext = name[dot:].lower()
    return ext if ext in EXTENSIONS else None


def not_supported(name: str) -> UploadError:
    return UploadError(415, f"{name!r} is not a video, DICOM or image file that uscl reads "
                            f"(extensions: {' '.join(EXTENSIONS)}, or a DICOM file without one)")


class _FilePart:
    """Callbacks of python-multipart's streaming parser: the part named ``file`` goes to disk, the rest is dropped."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.headers: dict[bytes, bytes] = {}
        self._field = b""
        self.out = None  # open file of the current part, when it is the file part
        self.saved: tuple[Path, str] | None = None
        self.size = 0
        self.error: UploadError | None = None

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._hfield, "on_header_value": self._hvalue,
                "on_headers_finished": self._headers_done, "on_part_data": self._data, "on_part_end": self._end}

    def _begin(self) -> None:
        self.headers, self._field = {}, b""

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._field = data[start:end].lower()

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self.headers[self._field] = self.headers.get(self._field, b"") + data[start:end]

    def _headers_done(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        if params.get(b"name") != FIELD.encode() or self.saved is not None or self.error:
            return
        name = display_name(params.get(b"filename", b"").decode("utf-8", "replace"))
        ext = safe_extension(name)
        if ext is None:
            self.error = not_supported(name)
            return
        path = self.folder / f"input{ext}"
        self.out = open(path, "wb")
        self.saved = (path, name)

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.out is None or self.error:
            return
        self.size += end - start
        if self.size > self.max_bytes:
            self.error = too_large(self.max_bytes)
            return
        self.out.write(data[start:end])

    def _end(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None


def too_large(max_bytes: int) -> UploadError:
    return UploadError(413, f"the file is larger than the upload limit of {max_bytes / 2**20:g} MB "
                            "(`uscl serve --max-upload-mb`)")


async def save_upload(headers, body: AsyncIterator[bytes], folder: Path, max_bytes: int) -> SavedUpload:
    """Stream a multipart/form-data body into ``folder``; :class:`UploadError` for anything unusable."""
    ctype, params = parse_options_header(headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError(400, f'send the file as multipart/form-data in a field named "{FIELD}"')
    length = headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes + MULTIPART_SLACK:
        raise too_large(max_bytes)
    part = _FilePart(folder, max_bytes)
    parser = MultipartParser(params[b"boundary"], part.callbacks())
    total = 0
    try:
        async for chunk in body:
            total += len(chunk)
            if total > max_bytes + MULTIPART_SLACK:
                part.error = part.error or too_large(max_bytes)
            if part.error:
                raise part.error
            parser.write(chunk)
        if part.error:
            raise part.error
        parser.finalize()
    except UploadError:
        raise
    except Exception as exc:  # the parser's own errors: a malformed body
        raise UploadError(400, f"malformed multipart body ({exc})") from None
    finally:
        part._end()
    return _checked(part)


def _checked(part: _FilePart) -> SavedUpload:
    if part.saved is None:
        raise UploadError(400, f'no multipart field named "{FIELD}" holding a file')
    path, name = part.saved
    if part.size == 0:
        raise UploadError(400, f"{name!r} is empty (0 bytes)")
    kind = kind_of(path)
    if kind is None:  # only files without an extension get here: DICOM is recognised by its magic bytes
        raise not_supported(name)
    return SavedUpload(path, name, kind, part.size)
