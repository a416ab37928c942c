"""Your own image-text pairs: a JSONL manifest, one record per line.

    {"image": "photos/cat.jpg", "text": "a cat asleep on a red sofa"}
    {"image": "/data/dog.png", "text": "a dog"}

Image paths are relative to the manifest's folder, or absolute (`~` is expanded). Blank lines are
ignored; other keys in a record are ignored too. A line that is not a JSON object with string
"image" and "text" raises UserError naming the line.

Every image is decoded once when the manifest is opened, so a file that cannot be read (missing,
corrupt, truncated, not an image) is found before training starts: it is reported with a warning
(path and reason) and listed in `.skipped`, and the dataset holds the readable records only. With
`strict=True` the first unreadable file raises UserError instead.

Each item is (uint8 (S, S, 3) image, text): EXIF orientation applied, converted to RGB (palette,
grayscale and 16-bit images included; transparency composited over `background`, white by default),
resized so the short side is S (bicubic, after PIL's fast integer reduce for large shrinks) and
centre-cropped to S x S.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniar.errors import UserError

EXAMPLE_LINE = '{"image": "cat.jpg", "text": "a cat on a sofa"}'


@dataclass(frozen=True)
class ManifestRecord:
    line: int   # 1-based line number in the manifest
    image: Path  # resolved path
    text: str


@dataclass(frozen=True)
class SkippedImage:
    line: int
    image: Path
    reason: str


def read_manifest(path: str | os.PathLike) -> list[ManifestRecord]:
    """Parse a JSONL manifest; image paths are resolved against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest not found: {path}. Expected a JSONL file with lines like {EXAMPLE_LINE}")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg} at column {err.colno}). "
                                f"Each line must be one object like {EXAMPLE_LINE}") from None
            if not isinstance(record, dict):
                raise UserError(f"{where}: expected a JSON object like {EXAMPLE_LINE}, got {type(record).__name__}")
            for key in ("image", "text"):
                if key not in record:
                    raise UserError(f"{where}: missing key {key!r}; each line needs \"image\" and \"text\", "
                                    f"like {EXAMPLE_LINE}")
                if not isinstance(record[key], str):
                    raise UserError(f"{where}: {key!r} must be a string, got {type(record[key]).__name__}")
            if not record["image"]:
                raise UserError(f"{where}: 'image' is empty; give the image file's path")
            image = Path(record["image"]).expanduser()
            records.append(ManifestRecord(lineno, image if image.is_absolute() else path.parent / image, record["text"]))
    return records


def to_uint8_rgb(img, background: tuple[int, int, int] = (255, 255, 255)):
    """Any PIL image -> mode RGB: transparency composited over `background`, 16/32-bit and float
    grayscale rescaled to 8 bits (PIL's own conversion would clip them)."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        arr = np.asarray(img)
        if arr.dtype.kind == "f":
            top = 1.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 255.0
            arr = np.nan_to_num(arr) / top * 255.0
        elif img.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0  # 16-bit range 0..65535 onto 0..255
        gray = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def resize_center_crop(img, size: int):
    """Resize so the short side is `size` (bicubic), then crop the centre size x size."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        # reducing_gap: shrink by an integer factor with PIL's fast box reduce first, then bicubic.
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image(path: str | os.PathLike, size: int, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Read one image file into uint8 (size, size, 3). Raises OSError/ValueError if it cannot be read."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # decode at a reduced scale that still covers size x size
        img.load()
        img = ImageOps.exif_transpose(img)
        img = to_uint8_rgb(img, background)
        img = resize_center_crop(img, size)
        return np.asarray(img, dtype=np.uint8).copy()


class ImageTextManifest:
    """(uint8 (S,S,3) image, text) pairs from a JSONL manifest; indexable and iterable.

    `.skipped` lists the records whose image could not be read, each with its reason.
    """

    def __init__(self, path: str | os.PathLike, image_size: int, strict: bool = False,
                 background: tuple[int, int, int] = (255, 255, 255)) -> None:
        if not isinstance(image_size, (int, np.integer)) or image_size < 1:
            raise UserError(f"image_size must be a positive integer, got {image_size!r}")
        self.path = Path(path)
        self.image_size = int(image_size)
        self.background = tuple(background)
        self.skipped: list[SkippedImage] = []
        records = read_manifest(self.path)
        if not records:
            raise UserError(f"manifest {self.path} has no records; add lines like {EXAMPLE_LINE}")
        self.records: list[ManifestRecord] = []
        for record in records:
            reason = self._unreadable(record)
            if reason is None:
                self.records.append(record)
                continue
            message = f"{self.path}:{record.line}: cannot read image {record.image}: {reason}"
            if strict:
                raise UserError(f"{message}. Fix or remove the line (or open with strict=False to skip it).")
            warnings.warn(f"skipping {message}", stacklevel=2)
            self.skipped.append(SkippedImage(record.line, record.image, reason))
        if not self.records:
            raise UserError(f"no readable image in {self.path}: all {len(records)} were skipped "
                            f"(first: {self.skipped[0].image}: {self.skipped[0].reason})")

    def _unreadable(self, record: ManifestRecord) -> str | None:
        """Why this record's image cannot be used, or None when it decodes."""
        from PIL import Image, UnidentifiedImageError

        if not record.image.exists():
            return "file not found"
        if not record.image.is_file():
            return "not a file"
        try:
            self._load(record)
        except UnidentifiedImageError:
            return "not an image file (PIL cannot identify it)"
        except Image.DecompressionBombError as err:
            return f"too large to decode safely ({err})"
        except (OSError, ValueError, SyntaxError) as err:  # PIL reports corrupt data with these
            return f"cannot decode ({type(err).__name__}: {err})"
        return None

    def _load(self, record: ManifestRecord) -> np.ndarray:
        return load_image(record.image, self.image_size, self.background)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        record = self.records[index]  # IndexError past the end, negative indices allowed
        try:
            return self._load(record), record.text
        except (OSError, ValueError, SyntaxError) as err:
            raise UserError(f"{self.path}:{record.line}: image {record.image} could be read when the "
                            f"manifest was opened but not now ({err}); was it changed?") from err

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (f"ImageTextManifest({str(self.path)!r}, image_size={self.image_size}, "
                f"records={len(self)}, skipped={len(self.skipped)})")
