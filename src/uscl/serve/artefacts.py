"""What the page shows beside the `uscl predict` files: the overlay clip as an animated GIF (it plays in
every browser, H.264 or not) and a per-frame plot (class probabilities, mask areas or detection counts)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image

from uscl.utils.atomic import atomic_path
from uscl.video.sampling import even_indices

GIF_MAX_FRAMES = 240


def mp4_frames(path: Path) -> tuple[list[np.ndarray], float]:
    """The RGB frames of an overlay MP4 uscl wrote, and its frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 10)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return frames, fps


def write_overlay_gif(mp4: Path, out: Path) -> Path:
    """An animated GIF of the overlay clip (at most 240 evenly spaced frames, looping)."""
    frames, fps = mp4_frames(mp4)
    if len(frames) > GIF_MAX_FRAMES:
        step = len(frames) / GIF_MAX_FRAMES
        frames = [frames[int(i)] for i in even_indices(len(frames), GIF_MAX_FRAMES)]
        fps /= step
    images = [Image.fromarray(f).convert("P", palette=Image.ADAPTIVE, colors=255) for f in frames]
    with atomic_path(out, suffix=".gif") as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(20, int(round(1000 / max(fps, 1e-3)))), loop=0)
    return out


def write_series_plot(out: Path, series: dict[str, np.ndarray], ylabel: str, title: str,
                      colours: dict[str, str] | None = None, ylim: tuple[float, float] | None = None) -> Path:
    """One line per series over the frames (matplotlib, Agg backend), written atomically as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.0, 2.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, values in series.items():
        values = np.asarray(values, float)
        ax.plot(np.arange(len(values)), values, marker="o" if len(values) < 40 else None, markersize=3,
                label=name, color=(colours or {}).get(name))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame (as sampled by the model's preprocessing)")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return out
