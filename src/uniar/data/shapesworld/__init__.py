"""ShapesWorld: the embedded, exactly-scorable benchmark (docs/shapesworld.md)."""

from uniar.data.shapesworld.spec import (  # noqa: F401
    CELLS, COLOR_NAMES, COLORS, NOVEL_PAIRS, SHAPES, SIZE_NAMES, SIZES, SPLITS, Obj, Scene,
)
from uniar.data.shapesworld.generate import has_novel_pair, sample_scene  # noqa: F401
from uniar.data.shapesworld.render import render, render_batch  # noqa: F401
from uniar.data.shapesworld.text import NotCanonicalCaption, caption, paraphrase, parse_caption  # noqa: F401
from uniar.data.shapesworld.questions import QUESTION_TYPES, Question, answer, questions_for  # noqa: F401
from uniar.data.shapesworld.edits import EDIT_TYPES, Edit, EditError, apply_edit_instruction, make_edit  # noqa: F401
from uniar.data.shapesworld.dataset import Example, get_example, images, scenes  # noqa: F401

_PARSER_NAMES = ("parse_image", "parse_images", "parser_accuracy", "scene_agreement")


def __getattr__(name):
    # The parser needs scipy; import it on first use so `import uniar.data.shapesworld` (and with it
    # `uniar --help`) stays fast.
    if name in _PARSER_NAMES:
        from uniar.data.shapesworld import parser

        return getattr(parser, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
