"""Labelled image grids (sample sheets for reports and previews)."""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def image_grid(images, labels: list[str] | None = None, cols: int = 8, scale: int = 2,
               label_lines: int = 3, chars_per_line: int | None = None) -> np.ndarray:
    """Tile uint8 (N, H, W, 3) images into one uint8 image, each with a wrapped label beneath it."""
    images = np.asarray(images)
    n, h, w, _ = images.shape
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    cw, ch = w * scale, h * scale
    font = ImageFont.load_default()
    line_h = 11
    chars = chars_per_line or max(8, cw // 6)
    lab_h = (label_lines * line_h + 4) if labels else 0
    pad = 4
    sheet = Image.new("RGB", (cols * (cw + pad) + pad, rows * (ch + lab_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        r, c = divmod(i, cols)
        x, y = pad + c * (cw + pad), pad + r * (ch + lab_h + pad)
        tile = Image.fromarray(images[i]).resize((cw, ch), Image.NEAREST)
        sheet.paste(tile, (x, y))
        if labels:
            lines = textwrap.wrap(str(labels[i]), chars)[:label_lines]
            for j, line in enumerate(lines):
                draw.text((x, y + ch + 2 + j * line_h), line, fill=(0, 0, 0), font=font)
    return np.asarray(sheet)
