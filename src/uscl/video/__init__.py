"""Decoding inputs into frames: PyAV videos, DICOM, still images, folders of frames.

>>> from uscl.video import read_frames, discover_inputs
>>> video = read_frames("clip.mp4", channels="grey", fps=3, max_frames=30)
>>> video.frames.shape              # (T, H, W, 1) uint8, native size
"""

from uscl.video.decoded import DecodedVideo, DecodeError, luma, to_channels
from uscl.video.discover import Discovery, VideoInput, discover_inputs, is_frame_folder
from uscl.video.formats import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, DICOM_EXTENSIONS, kind_of, natural_key
from uscl.video.labels import (
    DEFAULT_PREFIX_MAP,
    LabelInfo,
    LabelResolver,
    label_by_parent,
    label_by_prefix,
    parse_prefix_map,
    parse_where,
    read_labels_csv,
)
from uscl.video.reader import frame_files, read_frames
from uscl.video.sampling import NearestTimeSampler, even_indices, fps_indices

__all__ = [
    "DEFAULT_PREFIX_MAP", "DICOM_EXTENSIONS", "DecodeError", "DecodedVideo", "Discovery", "IMAGE_EXTENSIONS",
    "LabelInfo", "LabelResolver", "NearestTimeSampler", "VIDEO_EXTENSIONS", "VideoInput", "discover_inputs",
    "even_indices", "fps_indices", "frame_files", "is_frame_folder", "kind_of", "label_by_parent",
    "label_by_prefix", "luma", "natural_key", "parse_prefix_map", "parse_where", "read_frames",
    "read_labels_csv", "to_channels",
]
