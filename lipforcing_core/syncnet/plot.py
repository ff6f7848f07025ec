"""A PNG-ready chart of SyncNet's mean distance against AV offset, drawn with PIL alone.

The curve's minimum is the LSE-D and the AV offset; the dashed median line shows LSE-C as the gap
between them. A sharp, deep dip means confident sync; a flat curve means SyncNet cannot tell.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_output
from .metrics import SyncResult

WIDTH, HEIGHT = 800, 480
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 84, 28, 60, 64
INK, GRID, LINE, MARK, MEDIAN = (30, 30, 30), (225, 225, 225), (31, 119, 180), (214, 39, 40), (120, 120, 120)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, target: int = 8) -> list[float]:
    """Round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi]."""
    raw = (hi - lo) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int(math.ceil((hi - first) / step)) + 1)]


def _dashed_hline(draw: ImageDraw.ImageDraw, x0: float, x1: float, y: float, dash: int = 6) -> None:
    for x in range(int(x0), int(x1), 2 * dash):
        draw.line([(x, y), (min(x + dash, x1), y)], fill=MEDIAN, width=1)


def plot_offsets(result: SyncResult, title: str = "SyncNet: mean distance vs AV offset") -> Image.Image:
    """Line chart of ``result.dists`` by AV offset with the best offset and the median marked."""
    offsets = result.offsets.tolist()
    dists = result.dists.tolist()
    median = result.lse_d + result.lse_c
    span = max(max(dists) - min(dists), 1e-6)
    yticks = _nice_ticks(min(dists) - 0.08 * span, max(dists) + 0.08 * span)
    y_lo, y_hi = yticks[0], yticks[-1]
    x_lo, x_hi = min(offsets), max(offsets)
    left, right, top, bottom = MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP, HEIGHT - MARGIN_BOTTOM

    def px(offset: float, dist: float) -> tuple[float, float]:
        x = left + (offset - x_lo) / max(x_hi - x_lo, 1) * (right - left)
        return x, bottom - (dist - y_lo) / (y_hi - y_lo) * (bottom - top)

    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    small, normal, big = _font(13), _font(15), _font(18)
    decimals = max(0, -math.floor(math.log10(yticks[1] - yticks[0])))
    for value in yticks:
        _, y = px(x_lo, value)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.line([(left - 5, y), (left, y)], fill=INK)
        draw.text((left - 8, y), f"{value:.{decimals}f}", fill=INK, font=small, anchor="rm")
    for offset in range(x_lo, x_hi + 1):
        x, _ = px(offset, y_lo)
        major = offset % 5 == 0
        if major:
            draw.line([(x, top), (x, bottom)], fill=GRID)
            draw.text((x, bottom + 8), f"{offset:+d}" if offset else "0", fill=INK, font=small, anchor="mt")
        draw.line([(x, bottom), (x, bottom + (6 if major else 3))], fill=INK)
    draw.rectangle([left, top, right, bottom], outline=INK)

    _dashed_hline(draw, left + 1, right - 1, px(x_lo, median)[1])
    draw.text((right - 6, px(x_lo, median)[1] - 4), f"median {median:.2f}", fill=MEDIAN, font=small, anchor="rb")
    points = [px(o, d) for o, d in sorted(zip(offsets, dists))]
    draw.line(points, fill=LINE, width=2)
    for x, y in points:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=LINE)

    bx, by = px(result.offset, result.lse_d)
    draw.ellipse([bx - 7, by - 7, bx + 7, by + 7], outline=MARK, width=3)
    label = f"offset {result.offset:+d}, LSE-D {result.lse_d:.2f}"
    anchor = "lt" if bx < (left + right) / 2 else "rt"
    draw.text((bx + (10 if anchor == "lt" else -10), by + 8), label, fill=MARK, font=normal, anchor=anchor)

    draw.text((WIDTH / 2, 14), title, fill=INK, font=big, anchor="mt")
    summary = f"AV offset {result.offset:+d} frames   LSE-D {result.lse_d:.3f}   LSE-C {result.lse_c:.3f}"
    draw.text((WIDTH / 2, 38), summary, fill=INK, font=small, anchor="mt")
    draw.text(((left + right) / 2, HEIGHT - 10), "AV offset (video frames, 25 fps)", fill=INK, font=normal, anchor="mb")
    ylabel = Image.new("RGB", (bottom - top, 22), "white")
    ImageDraw.Draw(ylabel).text(((bottom - top) / 2, 11), "mean distance", fill=INK, font=normal, anchor="mm")
    img.paste(ylabel.rotate(90, expand=True), (8, top))
    return img


def save_report(result: SyncResult, out_dir: str | Path, stem: str = "syncnet") -> tuple[Path, Path]:
    """Write ``<stem>.json`` (offset, LSE-D, LSE-C, per-offset distances) and ``<stem>.png`` into ``out_dir``."""
    json_path, png_path = Path(out_dir) / f"{stem}.json", Path(out_dir) / f"{stem}.png"
    with atomic_output(json_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2))
    with atomic_output(png_path, overwrite=True) as tmp:
        plot_offsets(result).save(tmp)
    return json_path, png_path
