"""Image-text manifests: decoding, conversion to RGB, resize + centre crop, skipped files, bad lines."""

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from uniar.data.manifest import ImageTextManifest, load_image, read_manifest
from uniar.errors import UserError

S = 32
RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)


def centre_marked(width, height, centre, outside):
    """An image whose centred min(w,h) square is `centre` and the rest `outside`."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:] = outside
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    arr[top:top + side, left:left + side] = centre
    return arr


def write_manifest(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def folder(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(centre_marked(300, 100, BLUE, RED)).save(imgs / "wide.png")
    Image.fromarray(centre_marked(60, 150, GREEN, RED)).save(imgs / "tall.jpg", quality=95)
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[:, :25] = (*BLUE, 255)  # left half opaque blue, right half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(imgs / "alpha.png")
    Image.fromarray(np.full((40, 80), 100, np.uint8), mode="L").save(imgs / "gray.png")
    g16 = np.full((64, 64), 128 * 257, np.uint16)  # mid-grey in 16 bits; PIL's own conversion clips it to 255
    g16[:, 32:] = 65535
    Image.fromarray(g16).save(imgs / "deep.png")  # 16-bit grayscale PNG (mode I;16)
    pal = Image.fromarray(np.repeat([[0] * 10 + [1] * 10], 20, axis=0).astype(np.uint8), mode="P")
    pal.putpalette([*GREEN, *RED])
    pal.save(imgs / "palette.png", transparency=1)  # left half green, right half transparent
    data = (imgs / "wide.png").read_bytes()
    (imgs / "corrupt.png").write_bytes(data[: len(data) // 2])  # truncated PNG
    (imgs / "notes.jpg").write_text("this is not an image")
    records = [
        {"image": "imgs/wide.png", "text": "wide"},
        {"image": "imgs/tall.jpg", "text": "tall"},
        {"image": "imgs/corrupt.png", "text": "corrupt"},
        {"image": str(imgs / "alpha.png"), "text": "alpha, absolute path"},
        {"image": "imgs/missing.png", "text": "missing"},
        {"image": "imgs/gray.png", "text": "gray", "extra": "ignored"},
        {"image": "imgs/notes.jpg", "text": "not an image"},
        {"image": "imgs/deep.png", "text": "16-bit"},
        {"image": "imgs/palette.png", "text": "palette"},
    ]
    write_manifest(tmp_path / "data.jsonl", records)
    return tmp_path


def open_manifest(path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ImageTextManifest(path, S, **kw)
    return ds, [str(w.message) for w in caught]


def test_readable_records_sizes_and_skips(folder):
    ds, messages = open_manifest(folder / "data.jsonl")
    assert len(ds) == 6
    assert [text for _, text in ds] == ["wide", "tall", "alpha, absolute path", "gray", "16-bit", "palette"]
    for image, _ in ds:
        assert image.shape == (S, S, 3) and image.dtype == np.uint8
    skipped = {s.image.name: (s.line, s.reason) for s in ds.skipped}
    assert set(skipped) == {"corrupt.png", "missing.png", "notes.jpg"}
    assert skipped["missing.png"] == (5, "file not found")
    assert skipped["corrupt.png"][0] == 3 and "cannot decode" in skipped["corrupt.png"][1]
    assert "not an image" in skipped["notes.jpg"][1]
    assert len(messages) == 3
    assert any("missing.png" in m and "file not found" in m and "data.jsonl:5" in m for m in messages)
    assert "skipped=3" in repr(ds)


def test_centre_crop_of_wide_and_tall_images(folder):
    ds, _ = open_manifest(folder / "data.jsonl")
    wide, tall = ds[0][0].astype(int), ds[1][0].astype(int)
    # The centred square of each image was one colour; the crop is that square, edges aside.
    assert np.abs(wide[:, 2:-2] - BLUE).max() <= 3
    assert np.abs(tall[2:-2, :] - GREEN).max() <= 12  # JPEG
    # Symmetric: whatever red bleeds in at the edges does so equally on both sides.
    assert abs(wide[:, 0, 0].mean() - wide[:, -1, 0].mean()) <= 2
    assert abs(tall[0, :, 0].mean() - tall[-1, :, 0].mean()) <= 6


def test_colour_modes(folder):
    ds, _ = open_manifest(folder / "data.jsonl")
    alpha, gray, deep, palette = (ds[i][0].astype(int) for i in (2, 3, 4, 5))
    assert np.abs(alpha[:, :S // 2 - 2] - BLUE).max() <= 2
    assert (alpha[:, S // 2 + 2:] == 255).all()  # transparent -> white background
    assert (gray == 100).all()
    assert (deep[:, :S // 2 - 2] == 128).all() and (deep[:, S // 2 + 2:] == 255).all()  # scaled, not clipped
    assert (palette[:, :S // 2 - 2] == GREEN).all() and (palette[:, S // 2 + 2:] == 255).all()
    assert np.array_equal(ds[-1][0], ds[5][0])


def test_black_background_and_exif_rotation(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "clear.png")
    assert (load_image(tmp_path / "clear.png", 8, background=(0, 0, 0)) == 0).all()
    # Stored left red / right blue, with EXIF orientation 6 (display rotated 90 degrees clockwise):
    # shown upright, red is on top.
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40], arr[:, 40:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    shown = load_image(tmp_path / "rotated.jpg", 16).astype(int)
    assert np.abs(shown[:6] - RED).max() < 40 and np.abs(shown[-6:] - BLUE).max() < 40


def test_strict_raises_on_unreadable(folder):
    with pytest.raises(UserError, match=r"data.jsonl:3: cannot read image .*corrupt.png"):
        ImageTextManifest(folder / "data.jsonl", S, strict=True)


@pytest.mark.parametrize("line, message", [
    ('{"image": "a.png", "text": "ok"', "data.jsonl:2: not valid JSON"),
    ('{"image": "a.png"}', "data.jsonl:2: missing key 'text'"),
    ('{"text": "no image"}', "data.jsonl:2: missing key 'image'"),
    ('["a.png", "text"]', "data.jsonl:2: expected a JSON object"),
    ('{"image": "a.png", "text": 3}', "data.jsonl:2: 'text' must be a string"),
])
def test_malformed_lines_raise_with_line_number(tmp_path, line, message):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "data.jsonl").write_text('{"image": "a.png", "text": "fine"}\n' + line + "\n")
    with pytest.raises(UserError, match=message):
        read_manifest(tmp_path / "data.jsonl")


def test_blank_lines_empty_and_missing_manifests(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "data.jsonl").write_text('\n{"image": "a.png", "text": "x"}\n\n')
    ds = ImageTextManifest(tmp_path / "data.jsonl", 4)
    assert len(ds) == 1 and ds.records[0].line == 2 and ds[0][0].shape == (4, 4, 3)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no records"):
        ImageTextManifest(tmp_path / "empty.jsonl", 4)
    with pytest.raises(UserError, match="manifest not found"):
        ImageTextManifest(tmp_path / "nope.jsonl", 4)
    write_manifest(tmp_path / "bad.jsonl", [{"image": "gone.png", "text": "x"}])
    with pytest.raises(UserError, match="no readable image"), pytest.warns(UserWarning, match="gone.png"):
        ImageTextManifest(tmp_path / "bad.jsonl", 4)
    with pytest.raises(IndexError):
        ds[1]
