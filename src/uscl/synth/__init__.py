"""Synthetic lung-ultrasound videos: the embedded default data set.

Three classes mimic the POCUS task: ``regular`` (bright smooth pleura,
A-lines, lung sliding), ``covid`` (irregular pleura, B-lines) and
``pneumonia`` (subpleural consolidation with air bronchograms, sometimes an
effusion). Videos are rendered in beam space with speckle, attenuation and
log compression, scan-converted for a convex or linear probe, and written as
deterministic H.264 .mp4 files. On request (``masks=True``) each video also
gets a lossless per-frame label video of what was drawn (pleura, B-lines,
consolidation, effusion; :mod:`uscl.synth.masks`).

>>> from uscl.synth import generate, render_video
>>> generate("synth_lus", videos_per_class=10)          # OUT/<class>/*.mp4 + labels.csv
>>> render_video("covid", 20, 128, np.random.default_rng(0), b_line_positions=[0.5])
>>> generate("synth_lus", masks=True)                   # + OUT/<class>/*_mask.avi, labels.csv mask column
>>> video, labels = render_video("pneumonia", 8, 64, np.random.default_rng(0), masks=True)
"""

from uscl.synth.generate import SynthSummary, generate, video_name, video_rng
from uscl.synth.geometry import ProbeGeometry
from uscl.synth.masks import MASK_CLASSES, read_mask_video, write_mask_video
from uscl.synth.params import CLASSES, PREFIXES, Consolidation, VideoParams, sample_video_params
from uscl.synth.render import geometry_for, render_frames, render_video
from uscl.video.mp4 import write_mp4

__all__ = [
    "CLASSES", "MASK_CLASSES", "PREFIXES", "Consolidation", "ProbeGeometry", "SynthSummary", "VideoParams",
    "generate", "geometry_for", "render_frames", "render_video", "sample_video_params",
    "read_mask_video", "video_name", "video_rng", "write_mask_video", "write_mp4",
]
