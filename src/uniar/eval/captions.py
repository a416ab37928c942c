"""CIDEr-D and BLEU-4 for captions, the COCO way, without Java.

The scorers are pycocoevalcap's `Cider` (which is CIDEr-D: clipped counts and a length penalty,
sigma = 6) and `Bleu(4)` (corpus-level, "closest" reference length); both are pure Python. What
needs Java in pycocoevalcap is only its `PTBTokenizer`; `tokenize` below replaces it. For captions
made of words, spaces and punctuation (ShapesWorld captions have only commas and question marks)
it gives the same tokens PTBTokenizer gives: lower case, punctuation dropped.

CIDEr weighs n-grams by an IDF computed over the references of the whole corpus, so a score
depends on the set it is computed on: compare CIDEr values only across the same reference set,
and use more than a handful of images (with one image every IDF is zero and so is CIDEr).
"""

from __future__ import annotations

import re
from typing import Sequence

from uniar.errors import UserError

# A word: letters or digits, with inner hyphens or apostrophes kept ("left-most", "it's").
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-case words of `text`; punctuation is dropped, as PTBTokenizer does for COCO scoring."""
    if not isinstance(text, str):
        raise UserError(f"captions must be strings, got {type(text).__name__}")
    return _WORD.findall(text.lower())


def cider(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Corpus CIDEr-D of `predictions` (one caption per image) against their references.

    `references[i]` is one reference caption or a list of them for image i. Returns the mean
    over images of the per-image CIDEr-D (pycocoevalcap's scale: up to about 10 for a perfect
    caption on a varied corpus).
    """
    from pycocoevalcap.cider.cider import Cider

    gts, res = _coco_inputs(predictions, references)
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def bleu4(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Corpus BLEU-4 (pycocoevalcap `Bleu(4)`, brevity penalty from the closest reference length).

    Same inputs as `cider`. A prediction equal to one of its references everywhere gives 1.0.
    """
    from pycocoevalcap.bleu.bleu import Bleu

    gts, res = _coco_inputs(predictions, references)
    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return float(scores[3])


def _coco_inputs(predictions, references) -> tuple[dict, dict]:
    """Tokenised captions in pycocoevalcap's format: {image id: [space-joined tokens, ...]}."""
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise UserError(
            f"{len(predictions)} predicted captions but {len(references)} reference entries; "
            "give one reference caption (or list of captions) per prediction"
        )
    if not predictions:
        raise UserError("no captions to score; give at least one prediction and its references")
    gts, res = {}, {}
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise UserError(f"image {i} has no reference caption; give at least one")
        gts[i] = [" ".join(tokenize(r)) for r in refs]
        res[i] = [" ".join(tokenize(pred))]
    return gts, res
