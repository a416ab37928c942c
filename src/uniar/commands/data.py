"""`uniar data`: look at and export the ShapesWorld data set.

    uniar data preview --split novel -n 16 --out preview.png
    uniar data export --split test -n 1000 --out sw_test/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uniar.errors import UserError


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="preview or export the ShapesWorld data set")
    data.set_defaults(func=lambda args: data.print_help())
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    preview = commands.add_parser("preview", help="write a grid of images with their captions to a PNG")
    _add_common(preview, default_n=16)
    preview.add_argument("--columns", type=int, default=4, help="images per row (default 4)")
    preview.set_defaults(func=run_preview)

    export = commands.add_parser(
        "export", help="write images, edit targets and records.jsonl (scene, caption, questions, edit)"
    )
    _add_common(export, default_n=100)
    export.set_defaults(func=run_export)


def _add_common(parser: argparse.ArgumentParser, default_n: int) -> None:
    from uniar.data.shapesworld.spec import DEFAULT_IMAGE_SIZE, DEFAULT_MAX_OBJECTS, SPLITS

    parser.add_argument("--split", default="test", choices=SPLITS, help="which split (default test)")
    parser.add_argument("-n", type=int, default=default_n, help=f"number of examples (default {default_n})")
    parser.add_argument("--start", type=int, default=0, help="index of the first example (default 0)")
    parser.add_argument("--size", type=int, default=DEFAULT_IMAGE_SIZE, help="image side S in pixels (>= 48)")
    parser.add_argument("--max-objects", type=int, default=DEFAULT_MAX_OBJECTS, help="objects per scene, at most")
    parser.add_argument("--out", required=True, help="output file (preview) or folder (export)")


def _check_args(args) -> None:
    from uniar.data.shapesworld.spec import CELLS, MIN_IMAGE_SIZE

    if args.n < 1:
        raise UserError(f"-n must be at least 1, got {args.n}")
    if args.start < 0:
        raise UserError(f"--start must be non-negative, got {args.start}")
    if args.size < MIN_IMAGE_SIZE:
        raise UserError(f"--size {args.size} is too small: ShapesWorld images need S >= {MIN_IMAGE_SIZE}")
    if not 1 <= args.max_objects <= len(CELLS):
        raise UserError(f"--max-objects must be in 1..{len(CELLS)}, got {args.max_objects}")


# ---------------------------------------------------------------- preview


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap of `text` to lines no wider than `width` pixels."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines


def preview_grid(images, captions: list[str], columns: int = 4):
    """A PIL image: the images in a grid, each with its caption wrapped beneath it."""
    import math

    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    size = images.shape[1]
    scale = max(1, math.ceil(160 / size))  # small images are enlarged (nearest) so they can be seen
    tile = size * scale
    pad = 6
    line_height = font.getbbox("Ag")[3] + 3
    wrapped = [_wrap(c or "(empty)", font, tile) for c in captions]
    text_height = line_height * max(len(w) for w in wrapped)
    columns = max(1, min(columns, len(captions)))
    rows = math.ceil(len(captions) / columns)
    cell_w, cell_h = tile + 2 * pad, tile + text_height + 3 * pad
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (img, lines) in enumerate(zip(images, wrapped)):
        x, y = (k % columns) * cell_w + pad, (k // columns) * cell_h + pad
        big = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
        sheet.paste(Image.fromarray(big), (x, y))
        for i, line in enumerate(lines):
            draw.text((x, y + tile + pad + i * line_height), line, fill=(0, 0, 0), font=font)
    return sheet


def run_preview(args) -> int:
    import io

    from uniar.data.shapesworld.dataset import scenes
    from uniar.data.shapesworld.render import render_batch
    from uniar.data.shapesworld.text import caption
    from uniar.utils.io import write_bytes

    _check_args(args)
    if args.columns < 1:
        raise UserError(f"--columns must be at least 1, got {args.columns}")
    batch = scenes(args.split, args.start, args.n, args.max_objects)
    sheet = preview_grid(render_batch(batch, args.size), [caption(s) for s in batch], args.columns)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out}: {args.n} {args.split} images from index {args.start}")
    return 0


# ---------------------------------------------------------------- export


def export_record(example, image_file: str, target_file: str, size: int) -> dict:
    """The JSON record of one exported example."""
    return {
        "split": example.split,
        "index": example.index,
        "size": size,
        "image": image_file,
        "scene": example.scene.to_dict(),
        "caption": example.caption,
        "questions": [{"type": q.type, "question": q.question, "answer": q.answer} for q in example.questions],
        "edit": {
            "type": example.edit.type,
            "instruction": example.edit.instruction,
            "target_image": target_file,
            "target_scene": example.edit.target.to_dict(),
        },
    }


def run_export(args) -> int:
    from tqdm import tqdm

    from uniar.data.shapesworld.dataset import get_example
    from uniar.data.shapesworld.render import render
    from uniar.utils.io import save_image, write_text

    _check_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; export writes a folder (images/, edit_targets/, records.jsonl)")
    lines = []
    for index in tqdm(range(args.start, args.start + args.n), desc=f"export {args.split}", unit="img"):
        example = get_example(args.split, index, args.max_objects)
        image_file, target_file = f"images/{index:06d}.png", f"edit_targets/{index:06d}.png"
        save_image(out / image_file, render(example.scene, args.size))
        save_image(out / target_file, render(example.edit.target, args.size))
        lines.append(json.dumps(export_record(example, image_file, target_file, args.size)))
    write_text(out / "records.jsonl", "\n".join(lines) + "\n")
    print(f"wrote {args.n} {args.split} examples to {out} (images/, edit_targets/, records.jsonl)")
    return 0
