"""Known answers for the ShapesWorld scores, CIDEr/BLEU-4 and perplexity."""

import math

import numpy as np
import pytest
import torch

from uniar.data.shapesworld.generate import sample_scene
from uniar.data.shapesworld.spec import Obj, Scene
from uniar.data.shapesworld.text import caption
from uniar.errors import UserError
from uniar.eval.captions import bleu4, cider, tokenize
from uniar.eval.perplexity import batch_nll, perplexity, perplexity_from_nll, token_windows
from uniar.eval.scores import (
    PSNR_MAX, caption_scores, edit_scores, normalize_answer, psnr, recon_scores, t2i_scores, vqa_scores,
)

SCENES = [sample_scene("val", i) for i in range(40)]

RED_CIRCLE = Obj(cell=0, shape="circle", color="red", size="large")
BLUE_CROSS = Obj(cell=4, shape="cross", color="blue", size="small")


def scene(*objects):
    return Scene.from_objects(objects)


# ----------------------------------------------------------------- text-to-image


def test_t2i_set_against_itself_is_perfect():
    s = t2i_scores(SCENES, SCENES)
    assert s == {
        "t2i_exact": 1.0, "t2i_recall": 1.0, "t2i_precision": 1.0, "t2i_acc_shape": 1.0,
        "t2i_acc_color": 1.0, "t2i_acc_size": 1.0, "t2i_acc_cell": 1.0, "n": len(SCENES),
    }


def test_t2i_known_partial_answer():
    prompt = [scene(RED_CIRCLE, BLUE_CROSS), scene(RED_CIRCLE)]
    generated = [
        # right circle; the cross is green instead of blue; plus an extra object
        scene(RED_CIRCLE, Obj(4, "cross", "green", "small"), Obj(8, "square", "cyan", "small")),
        scene(),  # nothing drawn
    ]
    s = t2i_scores(prompt, generated)
    assert s["t2i_exact"] == 0.0
    assert s["t2i_recall"] == pytest.approx(1 / 3)  # 1 of 3 prompt objects
    assert s["t2i_precision"] == pytest.approx(1 / 3)  # 1 of 3 generated objects
    assert s["t2i_acc_cell"] == pytest.approx(2 / 3)  # cells 0 and 4 filled in image 1, cell 0 empty in image 2
    assert s["t2i_acc_shape"] == pytest.approx(2 / 3)
    assert s["t2i_acc_size"] == pytest.approx(2 / 3)
    assert s["t2i_acc_color"] == pytest.approx(1 / 3)
    assert s["n"] == 2


def test_t2i_ignores_jitter_and_counts_empty_generation_as_zero_precision():
    jittered = Scene.from_objects([RED_CIRCLE], [(0.02, -0.01)])
    assert t2i_scores([scene(RED_CIRCLE)], [jittered])["t2i_exact"] == 1.0
    assert t2i_scores([scene(RED_CIRCLE)], [scene()])["t2i_precision"] == 0.0


# ----------------------------------------------------------------- captioning


def test_perfect_captions():
    captions = [caption(s) for s in SCENES]
    s = caption_scores(SCENES, captions)
    assert s["caption_exact"] == 1.0
    assert s["caption_f1"] == 1.0
    assert s["caption_parse_rate"] == 1.0
    assert s["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert s["cider"] > 3.0
    assert s["n"] == len(SCENES)


def test_shuffled_captions_score_low():
    captions = [caption(s) for s in SCENES]
    shuffled = captions[1:] + captions[:1]
    perfect = caption_scores(SCENES, captions)
    s = caption_scores(SCENES, shuffled)
    assert s["caption_exact"] < 0.1
    assert s["caption_parse_rate"] == 1.0
    assert s["caption_f1"] < 0.2
    assert s["cider"] < perfect["cider"] / 3
    assert s["bleu4"] < 0.8


def test_unparseable_caption_counts_zero():
    scenes = [scene(RED_CIRCLE), scene(RED_CIRCLE, BLUE_CROSS)]
    predictions = ["A large red circle at the top left.", caption(scenes[1])]  # the first is not canonical
    s = caption_scores(scenes, predictions)
    assert s["caption_parse_rate"] == 0.5
    assert s["caption_exact"] == 0.5
    # 2 matched objects; 2 named (second caption only) + 3 true objects.
    assert s["caption_f1"] == pytest.approx(2 * 2 / (2 + 3))


def test_explicit_references_are_used():
    refs = [["something else entirely", caption(s)] for s in SCENES]
    s = caption_scores(SCENES, [caption(x) for x in SCENES], refs)
    assert s["bleu4"] == pytest.approx(1.0, abs=1e-6)


def test_tokenize_drops_punctuation_and_case():
    assert tokenize("A Large red circle, at the top-left.") == ["a", "large", "red", "circle", "at", "the", "top-left"]


def test_cider_and_bleu_on_known_pairs():
    refs = [caption(s) for s in SCENES]
    assert cider(refs, refs) > cider(refs[::-1], refs)
    assert bleu4(refs, [[r] for r in refs]) == pytest.approx(1.0, abs=1e-6)
    # With one image every IDF weight is log(1/1) = 0: corpus-level CIDEr needs a corpus.
    assert cider([refs[0]], [refs[0]]) == 0.0
    # Empty predictions are scored (as zero), not crashed on.
    assert cider([""] * len(refs), refs) == 0.0
    assert bleu4([""] * len(refs), refs) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------- VQA


def test_vqa_known_counts():
    types = ["color", "color", "shape", "count", "count", "count", "exists", "where"]
    preds = ["Red.", "blue", " nothing ", "two", "Three!", "one", "YES", "top  left"]
    answers = ["red", "green", "nothing", "two", "three", "four", "yes", "top left"]
    s = vqa_scores(types, preds, answers)
    assert s == {
        "vqa_acc": 6 / 8, "vqa_acc_color": 0.5, "vqa_acc_shape": 1.0, "vqa_acc_count": 2 / 3,
        "vqa_acc_exists": 1.0, "vqa_acc_where": 1.0, "n": 8,
    }


def test_vqa_missing_type_is_none_and_unknown_type_raises():
    s = vqa_scores(["count"], ["one"], ["one"])
    assert s["vqa_acc_color"] is None and s["vqa_acc_count"] == 1.0
    with pytest.raises(UserError, match="unknown VQA question types"):
        vqa_scores(["colour"], ["red"], ["red"])


def test_normalize_answer():
    assert normalize_answer("  Top   Left ?") == "top left"
    assert normalize_answer("yes.") == "yes"


# ----------------------------------------------------------------- editing and tokenizers


def test_edit_scores():
    targets = [scene(RED_CIRCLE), scene(RED_CIRCLE, BLUE_CROSS), scene(BLUE_CROSS)]
    edited = [scene(RED_CIRCLE), scene(RED_CIRCLE), scene(BLUE_CROSS)]
    assert edit_scores(targets, edited) == {"edit_exact": 2 / 3, "n": 3}
    by_type = edit_scores(targets, edited, ["add", "add", "remove"])
    assert by_type["edit_exact_add"] == 0.5 and by_type["edit_exact_remove"] == 1.0
    assert by_type["edit_exact_move"] is None and by_type["edit_exact"] == 2 / 3
    with pytest.raises(ValueError, match="edit type"):
        edit_scores(targets, edited, ["add", "add", "resize"])


def test_psnr_known_values():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    assert psnr(a, a) == PSNR_MAX  # identical images: the documented cap, not inf
    b = a.copy()
    b[...] = 255
    assert psnr(a, b) == pytest.approx(0.0)
    c = np.full_like(a, 10)  # MSE = 100 -> 10*log10(255^2/100)
    assert psnr(a, c) == pytest.approx(10 * math.log10(255**2 / 100))
    # torch (B,3,H,W) and a single image work too
    ta = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    assert psnr(ta, ta + 10) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(a[0], c[0]) == pytest.approx(10 * math.log10(255**2 / 100))


def test_psnr_bad_inputs():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(UserError, match="same shape"):
        psnr(a, a[:1])
    with pytest.raises(UserError, match="uint8"):
        psnr(a.astype(np.float32), a)


def test_recon_scores():
    scenes = [scene(RED_CIRCLE), scene(BLUE_CROSS)]
    images = np.zeros((2, 8, 8, 3), np.uint8)
    s = recon_scores(scenes, [scene(RED_CIRCLE), scene(RED_CIRCLE)], images, images)
    assert s == {"recon_exact": 0.5, "psnr": PSNR_MAX, "n": 2}
    with pytest.raises(UserError, match="one image per scene"):
        recon_scores(scenes, scenes, images[:1], images[:1])


@pytest.mark.parametrize(
    "call",
    [
        lambda: t2i_scores(SCENES, SCENES[:-1]),
        lambda: caption_scores(SCENES, ["x"]),
        lambda: caption_scores(SCENES[:2], ["x", "y"], ["x"]),
        lambda: vqa_scores(["color"], ["red", "blue"], ["red", "blue"]),
        lambda: edit_scores(SCENES, SCENES[:3]),
        lambda: cider(["a b"], ["a b", "c d"]),
    ],
)
def test_mismatched_lengths_raise(call):
    with pytest.raises(UserError, match="give"):
        call()


def test_empty_inputs_raise():
    with pytest.raises(UserError, match="at least one"):
        t2i_scores([], [])


# ----------------------------------------------------------------- perplexity


VOCAB = 11


def uniform_model(ids):
    return torch.zeros(*ids.shape, VOCAB)


def oracle_model(ids):
    """Knows the stream is 0, 1, 2, ... mod VOCAB: puts (almost) all mass on the next id."""
    return torch.nn.functional.one_hot((ids + 1) % VOCAB, VOCAB).float() * 50.0


def test_uniform_model_has_perplexity_vocab_size():
    tokens = torch.arange(100) % VOCAB
    assert perplexity(uniform_model, token_windows(tokens, 16, 3)) == pytest.approx(VOCAB, rel=1e-5)


def test_oracle_model_has_perplexity_one():
    tokens = torch.arange(100) % VOCAB
    assert perplexity(oracle_model, token_windows(tokens, 16, 3)) == pytest.approx(1.0, abs=1e-6)


def test_token_windows_cover_every_target_once():
    tokens = torch.arange(50)
    total = sum(int(mask[:, 1:].sum()) for _, mask in token_windows(tokens, 8, 2))
    assert total == 49
    (ids, mask), *_ = token_windows(tokens, 8, 2)
    assert ids[1, 0] == ids[0, -1]  # windows overlap by one token


def test_mask_selects_targets():
    ids = torch.tensor([[1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1]], dtype=torch.bool)
    nll, count = batch_nll(uniform_model, ids, mask)
    assert count == 2 and nll == pytest.approx(2 * math.log(VOCAB))


def test_transformers_style_output_and_errors():
    class Out:
        def __init__(self, logits):
            self.logits = logits

    ids = torch.tensor([[1, 2, 3]])
    assert batch_nll(lambda x: Out(uniform_model(x)), ids)[1] == 2
    with pytest.raises(UserError, match="at least one target"):
        perplexity_from_nll(0.0, 0)
    with pytest.raises(UserError, match="logits of shape"):
        batch_nll(lambda x: torch.zeros(1, VOCAB), ids)
