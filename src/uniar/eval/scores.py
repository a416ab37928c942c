"""The ShapesWorld scores (docs/shapesworld.md, section 4).

Each function is pure: it takes the scenes (parsed from images by the scene parser, or the
ground truth) and strings, and returns a dict keyed by the metric names of the spec, plus `n`,
the number of samples scored. Rates are fractions in [0, 1]. Object-level rates are micro
averages: objects are pooled over the whole set before dividing, so a scene with three objects
weighs three times a scene with one.

Inputs of different lengths, or empty inputs, raise `UserError`: a score of nothing, or of
misaligned pairs, would be a silent bug.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch

from uniar.data.shapesworld.edits import EDIT_TYPES
from uniar.data.shapesworld.questions import QUESTION_TYPES
from uniar.data.shapesworld.spec import Scene
from uniar.data.shapesworld.text import NotCanonicalCaption, caption, parse_caption
from uniar.errors import UserError
from uniar.eval.captions import bleu4, cider

VQA_TYPES: tuple[str, ...] = QUESTION_TYPES  # color, shape, count, exists, where

# PSNR of identical images, and the most any pair can score: 10*log10(255^2 / MSE) is infinite at
# MSE = 0, and a finite cap keeps means and JSON reports finite. Images differing by one grey
# level in one value score about 89 dB at 64x64, so the cap is not reached by real differences.
PSNR_MAX = 100.0


# --------------------------------------------------------------------------- text-to-image


def t2i_scores(prompt_scenes: Sequence[Scene], generated_scenes: Sequence[Scene]) -> dict:
    """Text-to-image scores: the prompt's scene against the scene parsed from the generated image.

    - `t2i_exact`: fraction of images whose parsed scene equals the prompt's scene (GenEval-style:
      nothing missing, nothing extra, every attribute right).
    - `t2i_recall`: prompt objects found in the generated scene / all prompt objects.
    - `t2i_precision`: generated objects that are in the prompt / all generated objects (0 when
      nothing at all was generated).
      An object matches when its shape, color, size and cell are all equal.
    - `t2i_acc_cell`: prompt objects whose cell holds some generated object / all prompt objects.
    - `t2i_acc_shape`, `t2i_acc_color`, `t2i_acc_size`: prompt objects whose cell holds a generated
      object with that attribute right / all prompt objects. An empty cell counts as wrong, so
      each attribute accuracy is at most `t2i_acc_cell`.
    """
    n = _check_pairs(prompt_scenes, generated_scenes, "prompt scenes", "generated scenes")
    exact = matched = n_prompt = n_generated = 0
    occupied = {"shape": 0, "color": 0, "size": 0, "cell": 0}
    for want, got in zip(prompt_scenes, generated_scenes):
        exact += want == got
        matched += _n_matched(want, got)
        n_prompt += len(want.objects)
        n_generated += len(got.objects)
        for obj in want.objects:
            there = got.object_at(obj.cell)
            if there is None:
                continue
            occupied["cell"] += 1
            occupied["shape"] += there.shape == obj.shape
            occupied["color"] += there.color == obj.color
            occupied["size"] += there.size == obj.size
    return {
        "t2i_exact": exact / n,
        "t2i_recall": _ratio(matched, n_prompt),
        "t2i_precision": _ratio(matched, n_generated),
        "t2i_acc_shape": _ratio(occupied["shape"], n_prompt),
        "t2i_acc_color": _ratio(occupied["color"], n_prompt),
        "t2i_acc_size": _ratio(occupied["size"], n_prompt),
        "t2i_acc_cell": _ratio(occupied["cell"], n_prompt),
        "n": n,
    }


# --------------------------------------------------------------------------- captioning


def caption_scores(
    image_scenes: Sequence[Scene],
    predicted_captions: Sequence[str],
    reference_captions: Sequence[str | Sequence[str]] | None = None,
) -> dict:
    """Captioning scores of predicted captions for images whose true scenes are `image_scenes`.

    - `caption_exact`: fraction of predictions whose parsed scene equals the image's scene.
    - `caption_f1`: micro object F1 = 2·matched / (objects named + objects in the images).
      A prediction that does not parse (not canonical) names no objects and matches none.
    - `caption_parse_rate`: fraction of predictions the canonical caption parser accepts.
    - `cider`, `bleu4`: CIDEr-D and BLEU-4 against `reference_captions` (one caption or a list
      per image; by default each image's canonical caption), see `uniar.eval.captions`.
    """
    n = _check_pairs(image_scenes, predicted_captions, "image scenes", "predicted captions")
    if reference_captions is None:
        reference_captions = [caption(scene) for scene in image_scenes]
    _check_pairs(image_scenes, reference_captions, "image scenes", "reference captions")
    exact = parsed_ok = matched = n_named = n_true = 0
    for scene, text in zip(image_scenes, predicted_captions):
        n_true += len(scene.objects)
        try:
            parsed = parse_caption(text)
        except NotCanonicalCaption:
            continue
        parsed_ok += 1
        exact += parsed == scene
        matched += _n_matched(scene, parsed)
        n_named += len(parsed.objects)
    return {
        "caption_exact": exact / n,
        "caption_f1": _ratio(2 * matched, n_named + n_true),
        "cider": cider(predicted_captions, reference_captions),
        "bleu4": bleu4(predicted_captions, reference_captions),
        "caption_parse_rate": parsed_ok / n,
        "n": n,
    }


# --------------------------------------------------------------------------- VQA


def normalize_answer(answer: str) -> str:
    """Lower case, inner whitespace collapsed, surrounding spaces and trailing punctuation dropped."""
    if not isinstance(answer, str):
        raise UserError(f"VQA answers must be strings, got {type(answer).__name__}")
    answer = " ".join(answer.lower().split())
    return re.sub(r"[\s.,!?;:]+$", "", answer)


def vqa_scores(types: Sequence[str], predictions: Sequence[str], answers: Sequence[str]) -> dict:
    """VQA accuracy: a prediction is right when it equals the answer after `normalize_answer`.

    `types[i]` is question i's type, one of `VQA_TYPES`. Returns `vqa_acc` over all questions and
    `vqa_acc_<type>` per type; a type with no questions in the set gets None (not 0: nothing was
    measured).
    """
    n = _check_pairs(predictions, answers, "predictions", "answers")
    _check_pairs(types, answers, "question types", "answers")
    unknown = sorted(set(types) - set(VQA_TYPES))
    if unknown:
        raise UserError(f"unknown VQA question types {unknown}; expected each of {VQA_TYPES}")
    right = {t: 0 for t in VQA_TYPES}
    asked = {t: 0 for t in VQA_TYPES}
    for qtype, pred, answer in zip(types, predictions, answers):
        asked[qtype] += 1
        right[qtype] += normalize_answer(pred) == normalize_answer(answer)
    scores = {"vqa_acc": sum(right.values()) / n}
    for t in VQA_TYPES:
        scores[f"vqa_acc_{t}"] = right[t] / asked[t] if asked[t] else None
    scores["n"] = n
    return scores


# --------------------------------------------------------------------------- editing


def edit_scores(target_scenes: Sequence[Scene], edited_scenes: Sequence[Scene],
                types: Sequence[str] | None = None) -> dict:
    """`edit_exact`: fraction of edited images whose parsed scene equals the target scene.

    With `types` (each edit's type, one of `EDIT_TYPES`) also `edit_exact_<type>`; a type with no
    edits in the set gets None.
    """
    n = _check_pairs(target_scenes, edited_scenes, "target scenes", "edited scenes")
    hits = [want == got for want, got in zip(target_scenes, edited_scenes)]
    out = {"edit_exact": sum(hits) / n, "n": n}
    if types is not None:
        if len(types) != n or not set(types) <= set(EDIT_TYPES):
            raise ValueError(f"need one edit type of {EDIT_TYPES} per edit, got {sorted(set(types))} "
                             f"for {n} edits")
        for t in EDIT_TYPES:
            mine = [h for h, tt in zip(hits, types) if tt == t]
            out[f"edit_exact_{t}"] = sum(mine) / len(mine) if mine else None
    return out


# --------------------------------------------------------------------------- tokenizers


def recon_scores(
    original_scenes: Sequence[Scene],
    reconstructed_scenes: Sequence[Scene],
    originals,
    reconstructions,
) -> dict:
    """Tokenizer scores: `recon_exact` (parsed reconstruction equals the original scene) and `psnr`.

    `originals` and `reconstructions` are the uint8 images (see `psnr` for accepted layouts), in
    the same order as the scenes.
    """
    n = _check_pairs(original_scenes, reconstructed_scenes, "original scenes", "reconstructed scenes")
    originals, reconstructions = _as_image_batch(originals), _as_image_batch(reconstructions)
    if len(originals) != n:
        raise UserError(f"{n} scenes but {len(originals)} images; give one image per scene")
    exact = sum(want == got for want, got in zip(original_scenes, reconstructed_scenes))
    return {"recon_exact": exact / n, "psnr": psnr(originals, reconstructions), "n": n}


def psnr(a, b) -> float:
    """Mean over images of the per-image PSNR in dB, for uint8 images (peak 255).

    Accepts one image (H, W, 3) or a batch, as numpy (B, H, W, 3) or torch (B, 3, H, W) uint8;
    both arguments must have the same layout and shape. Each image scores at most `PSNR_MAX`
    (identical images score exactly `PSNR_MAX`), so the mean is always finite.
    """
    a, b = _as_image_batch(a), _as_image_batch(b)
    if a.shape != b.shape:
        raise UserError(f"PSNR needs images of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    diff = a.reshape(len(a), -1).astype(np.float64) - b.reshape(len(b), -1).astype(np.float64)
    mse = np.mean(diff * diff, axis=1)
    with np.errstate(divide="ignore"):
        per_image = 10.0 * np.log10(255.0**2 / mse)
    return float(np.mean(np.minimum(per_image, PSNR_MAX)))


# --------------------------------------------------------------------------- helpers


def _n_matched(a: Scene, b: Scene) -> int:
    """Objects in both scenes (equal shape, color, size and cell; jitter is ignored)."""
    return len(set(a.objects) & set(b.objects))


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _check_pairs(first: Sequence, second: Sequence, first_name: str, second_name: str) -> int:
    """Both sequences are non-empty and of equal length; returns that length."""
    if len(first) != len(second):
        raise UserError(
            f"{len(first)} {first_name} but {len(second)} {second_name}; "
            "scores compare item i of one with item i of the other, so give the same number of each"
        )
    if len(first) == 0:
        raise UserError(f"no {first_name} to score; give at least one sample")
    return len(first)


def _as_image_batch(images) -> np.ndarray:
    """uint8 images as a numpy batch; torch (B,3,H,W) stays in its own layout (only compared to itself)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    elif isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(im) for im in images])
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UserError(
            f"expected uint8 images, got {images.dtype}; convert model outputs with "
            "uniar.data.images.to_uint8 first"
        )
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise UserError(f"expected an image (H, W, 3) or a batch of images, got shape {images.shape}")
    return images

