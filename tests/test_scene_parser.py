"""The scene parser reads renders back exactly and degraded images nearly so."""

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from uniar.data.shapesworld import Obj, Scene, render, render_batch, sample_scene, scenes
from uniar.data.shapesworld.parser import parse_image, parse_images, parser_accuracy, scene_agreement


@pytest.mark.parametrize("size, n", [(64, 300), (128, 100), (48, 60), (200, 30)])
def test_clean_renders_parse_exactly(size, n):
    truth = scenes("test", 0, n, max_objects=3 if size != 48 else 9)
    parsed = parse_images(render_batch(truth, size))
    assert [p for p, t in zip(parsed, truth) if p != t] == []
    # The estimated jitter is within half a pixel of the true one.
    for p, t in zip(parsed, truth):
        assert np.abs(np.array(p.jitter) - np.array(t.jitter)).max() * size <= 0.5


def test_novel_split_parses_exactly():
    truth = scenes("novel", 0, 100)
    assert parser_accuracy(render_batch(truth, 64), truth)["exact"] == 1.0


def _blur(img):
    return np.clip(np.round(ndimage.gaussian_filter(img.astype(np.float32), (1.0, 1.0, 0))), 0, 255).astype(np.uint8)


def _noise(img, rng=np.random.default_rng(0)):
    return np.clip(np.round(img + rng.normal(0, 10, img.shape)), 0, 255).astype(np.uint8)


def _jpeg(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=75)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.mark.parametrize("degrade", [_blur, _noise, _jpeg], ids=["blur1", "noise10", "jpeg75"])
def test_degraded_images_parse_nearly_exactly(degrade):
    truth = scenes("val", 0, 100)
    batch = np.stack([degrade(img) for img in render_batch(truth, 64)])
    scores = parser_accuracy(batch, truth)
    assert scores["exact"] >= 0.97 and scores["acc_color"] == 1.0 and scores["acc_cell"] == 1.0


def test_small_crosses_survive_blobbing():
    # The known hard case: small crosses blurred into blobs still read as crosses.
    truth = [Scene((Obj(c, "cross", "red", "small"),), ((0.01 * (c - 4) / 4, 0.0),)) for c in range(9)]
    blobs = np.stack([_blur(_blur(img)) for img in render_batch(truth, 64)])  # sigma ~1.4 px
    assert parse_images(blobs) == truth


def test_black_image_is_empty_and_garbage_never_crashes():
    assert parse_image(np.zeros((64, 64, 3), np.uint8)) == Scene(())
    rng = np.random.default_rng(0)
    for img in (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), np.full((96, 96, 3), 255, np.uint8)):
        assert isinstance(parse_image(img), Scene)


@pytest.mark.parametrize("bad, error, message", [
    (np.zeros((64, 64), np.uint8), ValueError, "shape"),
    (np.zeros((64, 64, 3), np.float32), ValueError, "uint8"),
    (np.zeros((32, 32, 3), np.uint8), ValueError, "minimum"),
    (np.zeros((64, 48, 3), np.uint8), ValueError, "square"),
    ([[0, 0, 0]], TypeError, "numpy"),
])
def test_bad_inputs_raise_clear_errors(bad, error, message):
    with pytest.raises(error, match=message):
        parse_image(bad)


def test_parse_images_rejects_other_batches():
    with pytest.raises(ValueError, match=r"\(B, S, S, 3\)"):
        parse_images(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(TypeError, match="to_numpy_hwc"):
        parse_images("images.png")


def test_scene_agreement_known_answers():
    a, b, c = Obj(0, "circle", "red", "large"), Obj(4, "cross", "blue", "small"), Obj(8, "square", "cyan", "large")
    truth = [Scene((a, b)), Scene((c,))]
    parsed = [Scene((a, Obj(4, "circle", "blue", "small"))), Scene((Obj(2, "square", "cyan", "large"), c))]
    s = scene_agreement(parsed, truth)
    assert s["exact"] == 0.0 and s["n"] == 2 and s["n_objects"] == 3
    assert s["recall"] == pytest.approx(2 / 3) and s["precision"] == pytest.approx(2 / 4)
    assert s["acc_shape"] == pytest.approx(2 / 3) and s["acc_color"] == 1.0 and s["acc_cell"] == 1.0
    assert s["count_acc"] == 0.5
    perfect = scene_agreement(truth, truth)
    assert perfect["exact"] == perfect["recall"] == perfect["precision"] == 1.0
    with pytest.raises(ValueError, match="parsed scenes"):
        scene_agreement(parsed, truth[:1])


def test_parse_is_independent_of_jitterless_rendering():
    # A scene built by hand (jitter 0) renders and parses back to itself.
    layout = [(1, "triangle", "small"), (3, "cross", "large"), (5, "circle", "small"), (7, "square", "large")]
    scene = Scene(tuple(Obj(c, s, "green", z) for c, s, z in layout))
    assert parse_image(render(scene, 64)) == scene
    assert parse_image(render(sample_scene("train", 3), 256)) == sample_scene("train", 3)
