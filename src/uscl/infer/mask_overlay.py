"""Label masks drawn on frames: a translucent fill and an opaque contour per class, in fixed distinct colours.

Class k (mask value k, 1..K) always gets ``PALETTE[(k - 1) % len(PALETTE)]``
(Sasha Trubetskoy's distinct colours: red, green, yellow, blue, orange,
purple, cyan, magenta, lime, pink); the background (0) is left undrawn.
:func:`legend` names the colour of each class, as ``predictions.json`` records
it.

:func:`draw_detections` draws a detector's instances the same way: per instance
its mask's outline, its box and a "class score" label, in its class's colour.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)
PALETTE_NAMES = ("red", "green", "yellow", "blue", "orange", "purple", "cyan", "magenta", "lime", "pink")


def class_colour(k: int) -> tuple[int, int, int]:
    """RGB of mask class ``k`` (1-based; 0 is the background, which has none)."""
    if k < 1:
        raise ValueError(f"the background (0) is not drawn; classes are 1..K, got {k}")
    return PALETTE[(k - 1) % len(PALETTE)]


def legend(classes: list[str]) -> dict[str, dict]:
    """``{class: {"value": k, "colour": "#rrggbb", "name": "red"}}`` for the mask classes in order (k = 1..K)."""
    out = {}
    for k, c in enumerate(classes, start=1):
        r, g, b = class_colour(k)
        out[c] = {"value": k, "colour": f"#{r:02x}{g:02x}{b:02x}", "name": PALETTE_NAMES[(k - 1) % len(PALETTE)]}
    return out


def to_rgb(frames: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 1 | 3) → (..., H, W, 3)."""
    frames = np.asarray(frames)
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames[..., :3]


def contours(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels of (H, W) label map ``mask`` with a 4-neighbour of another value (the image edge is not
    a boundary): bool (H, W)."""
    m = np.pad(mask, 1, mode="edge")
    c = m[1:-1, 1:-1]
    edge = (c != m[:-2, 1:-1]) | (c != m[2:, 1:-1]) | (c != m[1:-1, :-2]) | (c != m[1:-1, 2:])
    return edge & (c > 0)


def display_scale(size: int, at_least: int = 224) -> int:
    """The integer enlargement that brings a ``size`` px image to ``at_least`` px or more (1 if it is already)."""
    return max(1, -(-at_least // max(1, size)))


def draw_masks(images: np.ndarray, masks: np.ndarray, num_classes: int, *, alpha: float = 0.35,
               scale: int = 1) -> np.ndarray:
    """Frames (N, H, W, 1 | 3) uint8 + label maps (N, H, W) → uint8 RGB (N, H*scale, W*scale, 3).

    Each class's pixels are blended with its colour (weight ``alpha``) and its
    boundary drawn opaque. ``scale`` > 1 enlarges first (frame: bilinear; mask:
    nearest, so every mask pixel stays a block), for viewing small frames.
    """
    images, masks = to_rgb(np.asarray(images, np.uint8)), np.asarray(masks)
    if images.shape[:3] != masks.shape:
        raise ValueError(f"frames {images.shape} and masks {masks.shape} differ in size")
    if scale > 1:
        images = enlarge(images, scale)
        masks = masks.repeat(scale, axis=1).repeat(scale, axis=2)
    out = images.astype(np.float32)
    for i, mask in enumerate(masks):
        edge = contours(mask)
        for k in range(1, num_classes + 1):
            region = mask == k
            if not region.any():
                continue
            colour = np.asarray(class_colour(k), np.float32)
            out[i][region] = out[i][region] * (1 - alpha) + colour * alpha
            out[i][region & edge] = colour
    return (out + 0.5).clip(0, 255).astype(np.uint8)


def enlarge(images: np.ndarray, scale: int) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) enlarged ``scale`` times (bilinear), for viewing small frames."""
    if scale <= 1 or not len(images):
        return images
    h, w = images.shape[1:3]
    return np.stack([np.asarray(Image.fromarray(im).resize((w * scale, h * scale), Image.BILINEAR)) for im in images])


def draw_detections(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                    masks: np.ndarray | None, classes: list[str], *, scale: int = 1) -> np.ndarray:
    """One frame (H, W, 1 | 3) uint8 + its instances → uint8 RGB (H*scale, W*scale, 3).

    ``boxes`` (N, 4) xyxy in the frame's pixels, x2/y2 exclusive; ``labels`` 1..K (class ``classes[k - 1]``,
    colour :func:`class_colour`); ``masks`` (N, H, W) binary or None. Drawn in increasing score order (the most
    confident on top): the outline of its mask, its box (2 px wide when enlarged) and
    ``"class 0.87"`` on a filled tab above the box (inside it when there is no room above).
    """
    rgb = enlarge(to_rgb(np.asarray(image, np.uint8))[None], scale)[0].copy()
    boxes, labels, scores = np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels), np.asarray(scores)
    order = np.argsort(scores, kind="stable")
    for i in order:
        if masks is not None:
            m = np.asarray(masks[i]) > 0
            if scale > 1:
                m = m.repeat(scale, axis=0).repeat(scale, axis=1)
            rgb[contours(m.astype(np.uint8))] = class_colour(int(labels[i]))
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = 2 if scale > 1 else 1
    for i in order:
        k = int(labels[i])
        colour = class_colour(k)
        x1, y1, x2, y2 = (float(v) * scale for v in boxes[i])
        x1, y1 = int(round(x1)), int(round(y1))
        x2, y2 = max(x1, int(round(x2)) - 1), max(y1, int(round(y2)) - 1)  # exclusive -> the last pixel
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        name = classes[k - 1] if 1 <= k <= len(classes) else str(k)
        text = f"{name} {float(scores[i]):.2f}"
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        tw, th = r - l + 2, b - t + 2
        ty = y1 - th if y1 - th >= 0 else y1
        tx = min(x1, max(0, canvas.width - tw))
        draw.rectangle((tx, ty, tx + tw - 1, ty + th - 1), fill=colour)
        luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        draw.text((tx + 1 - l, ty + 1 - t), text, fill=(0, 0, 0) if luma > 128 else (255, 255, 255), font=font)
    return np.asarray(canvas)
