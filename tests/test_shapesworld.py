"""ShapesWorld generation, rendering, captions, questions and edits (docs/shapesworld.md)."""

import math

import numpy as np
import pytest

from uniar.data.shapesworld import (
    CELLS, COLORS, NOVEL_PAIRS, SPLITS, NotCanonicalCaption, Obj, Scene, answer, apply_edit_instruction,
    caption, get_example, images, make_edit, paraphrase, parse_caption, questions_for, render, render_batch,
    sample_scene,
)
from uniar.data.shapesworld.edits import EditError
from uniar.data.shapesworld.generate import has_novel_pair
from uniar.data.shapesworld.render import cell_bounds, object_geometry
from uniar.data.shapesworld.spec import JITTER, SIZES


def novel_mentions(text: str) -> list[str]:
    return [f"{c} {s}" for c, s in NOVEL_PAIRS if f"{c} {s}" in text]


# ---------------------------------------------------------------- generation


def test_same_call_gives_same_scene_image_and_text():
    for split in SPLITS:
        a, b = get_example(split, 7), get_example(split, 7)
        assert a == b
        assert a.scene.jitter == b.scene.jitter
        assert a.edit.target.jitter == b.edit.target.jitter
        assert np.array_equal(render(a.scene), render(sample_scene(split, 7)))


def test_known_scene_is_stable_across_machines():
    # Pins the seeding scheme: a change here changes every split of the data set.
    assert caption(sample_scene("test", 0)) == (
        "a large purple circle at the bottom left and a large yellow triangle at the bottom center"
    )


def test_splits_are_independent():
    same = sum(sample_scene("train", i) == sample_scene("test", i) for i in range(200))
    assert same < 5
    assert len({caption(sample_scene("val", i)) for i in range(200)}) > 150


def test_scene_properties():
    for max_objects in (1, 3, 9):
        counts = set()
        for i in range(150):
            scene = sample_scene("val", i, max_objects)
            counts.add(len(scene.objects))
            assert 1 <= len(scene.objects) <= max_objects
            assert len({o.cell for o in scene.objects}) == len(scene.objects)
            assert all(abs(d) <= JITTER for j in scene.jitter for d in j)
        assert counts == set(range(1, max_objects + 1))


def test_train_never_contains_a_novel_pair_anywhere():
    for i in range(400):
        ex = get_example("train", i)
        assert not has_novel_pair(ex.scene) and not has_novel_pair(ex.edit.target)
        texts = [ex.caption, *ex.paraphrases, ex.edit.instruction, caption(ex.edit.target)]
        texts += [q.question for q in ex.questions]
        assert not any(novel_mentions(t) for t in texts), texts
        for q in ex.questions:
            if q.type == "color":
                assert (q.answer, q.question.split()[4]) not in NOVEL_PAIRS


def test_novel_scenes_each_contain_a_novel_pair():
    assert all(has_novel_pair(sample_scene("novel", i)) for i in range(300))
    # The other evaluation splits may contain them too.
    assert any(has_novel_pair(sample_scene("test", i)) for i in range(100))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown split"):
        sample_scene("dev", 0)
    with pytest.raises(ValueError, match="non-negative"):
        sample_scene("train", -1)
    with pytest.raises(ValueError, match="max_objects"):
        sample_scene("train", 0, max_objects=10)


# ---------------------------------------------------------------- rendering


def test_render_background_is_black_and_centres_have_the_exact_color():
    for i in range(60):
        scene = sample_scene("test", i, max_objects=5)
        for size in (48, 64, 100):
            img = render(scene, size)
            assert img.shape == (size, size, 3) and img.dtype == np.uint8
            for cell, (y0, y1, x0, x1) in enumerate(cell_bounds(size)):
                if scene.object_at(cell) is None:
                    assert not img[y0:y1, x0:x1].any()
            for obj, jit in zip(scene.objects, scene.jitter):
                cx, cy, half = object_geometry(obj, jit, size)
                if obj.shape == "triangle":
                    cy += half / 3  # the centroid lies deeper inside the triangle than the box centre
                assert tuple(img[int(cy), int(cx)]) == COLORS[obj.color]


def test_render_sizes_scale_with_s_and_areas_match_the_shapes():
    area_fraction = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5, "cross": 5 / 9}
    for size in (64, 128):
        for shape, fraction in area_fraction.items():
            for size_name, side in SIZES.items():
                scene = Scene((Obj(cell=4, shape=shape, color="yellow", size=size_name),))
                img = render(scene, size)
                covered = img[..., 0].astype(np.float64).sum() / COLORS["yellow"][0]
                expected = fraction * (side * size) ** 2
                # 4x supersampling quantises the side to quarter pixels: a few percent at S = 64.
                assert covered == pytest.approx(expected, rel=0.07), (shape, size_name, size)


def test_render_batch_matches_render_and_images():
    scenes = [sample_scene("val", i) for i in range(10)]
    batch = render_batch(scenes, 64)
    assert batch.shape == (10, 64, 64, 3)
    assert all(np.array_equal(b, render(s, 64)) for b, s in zip(batch, scenes))
    assert np.array_equal(images("val", 0, 10), batch)
    assert images("val", 3, 0).shape == (0, 64, 64, 3)


def test_render_rejects_small_sizes():
    with pytest.raises(ValueError, match="S >= 48"):
        render(sample_scene("val", 0), 32)


def test_objects_in_neighbouring_cells_never_share_a_pixel():
    # The worst case: large squares pushed towards each other by the largest jitter.
    left, right = Obj(0, "square", "red", "large"), Obj(1, "square", "red", "large")
    for size in (48, 64, 128):
        a = render(Scene((left,), ((JITTER, 0.0),)), size)[..., 0] > 0
        b = render(Scene((right,), ((-JITTER, 0.0),)), size)[..., 0] > 0
        assert not (a & b).any()
        if size >= 64:  # from S = 64 on there is a black column between them
            assert np.diff(np.flatnonzero((a | b).any(axis=0))).max() >= 2


# ---------------------------------------------------------------- text


def test_caption_round_trips():
    for split in SPLITS:
        for i in range(150):
            scene = sample_scene(split, i, max_objects=1 + i % 9)
            assert parse_caption(caption(scene)) == scene


def test_caption_examples():
    scene = Scene((Obj(4, "cross", "blue", "small"), Obj(8, "square", "yellow", "large")))
    assert caption(scene) == "a small blue cross at the center and a large yellow square at the bottom right"
    assert caption(Scene((Obj(0, "circle", "red", "large"),))) == "a large red circle at the top left"


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("a large red circle at the top left.", "period"),
    ("A large red circle at the top left", "capital"),
    ("a big red circle at the top left", "unknown size 'big'"),
    ("a large pink circle at the top left", "unknown color 'pink'"),
    ("a large red oval at the top left", "unknown shape 'oval'"),
    ("a large red circle at the far left", "unknown cell 'far left'"),
    ("a large red circle in the top left", "object 1"),
    ("a small red circle at the center and a large red circle at the top left", "cell order"),
    ("a small red circle at the center and a large red square at the center", "more than once"),
    ("a small red circle at the top left, a small red circle at the center", "joins"),
    ("a small red circle at the top left and a small red circle at the center and a small red circle "
     "at the bottom left", "joins"),
    (" a large red circle at the top left", "spaces"),
])
def test_parse_caption_says_what_is_not_canonical(text, message):
    with pytest.raises(NotCanonicalCaption, match=message):
        parse_caption(text)


def test_paraphrases_differ_from_the_canonical_caption_and_repeat_from_a_seed():
    for i in range(100):
        scene = sample_scene("train", i)
        texts = [paraphrase(scene, np.random.default_rng(i)) for _ in range(2)]
        assert texts[0] == texts[1]
        assert texts[0] != caption(scene)
        with pytest.raises(NotCanonicalCaption):
            parse_caption(texts[0])


# ---------------------------------------------------------------- questions


def test_questions_are_answered_by_their_scene_and_balanced():
    kinds, yes, nothing = {}, [], []
    for i in range(300):
        ex = get_example("test", i)
        for q in ex.questions:
            kinds[q.type] = kinds.get(q.type, 0) + 1
            assert answer(ex.scene, q.question) == q.answer
            assert len(q.answer.split()) == 1 or q.type == "where"
            if q.type == "exists":
                yes.append(q.answer == "yes")
            if q.type == "shape":
                nothing.append(q.answer == "nothing")
            if q.type == "where":
                color, shape = q.question[len("where is the "):-1].split()
                assert sum(o.color == color and o.shape == shape for o in ex.scene.objects) == 1
    assert set(kinds) == {"color", "shape", "count", "exists", "where"}
    assert 0.35 < np.mean(yes) < 0.65 and 0.35 < np.mean(nothing) < 0.65


def test_aid_questions_name_one_attribute_and_are_right_and_balanced():
    from uniar.data.shapesworld.questions import AID_TYPES, aid_questions

    rng = np.random.default_rng(0)
    kinds, yes = {}, {"exists_color": [], "exists_shape": []}
    for i in range(300):
        scene = get_example("train", i).scene
        for q in aid_questions(scene, rng):
            kinds[q.type] = kinds.get(q.type, 0) + 1
            attribute = q.type.split("_")[1]
            value = q.question.split()[3].rstrip("?")  # "is there a red object?", "where is the circle?"
            matches = [o for o in scene.objects if getattr(o, attribute) == value]
            if q.type.startswith("exists"):
                assert q.question.startswith("is there a ") and q.answer == ("yes" if matches else "no")
                yes[q.type].append(q.answer == "yes")
            else:
                assert q.question.startswith("where is the ")
                assert len(matches) == 1 and q.answer == matches[0].cell_name
            assert (attribute == "color") == q.question.endswith(" object?")
    assert set(kinds) == set(AID_TYPES)
    assert all(0.35 < np.mean(v) < 0.65 for v in yes.values())


def test_answer_rejects_unanswerable_questions():
    scene = Scene((Obj(0, "circle", "red", "large"), Obj(1, "circle", "red", "small")))
    assert answer(scene, "what shape is at the center?") == "nothing"
    assert answer(scene, "how many objects are there?") == "two"
    with pytest.raises(ValueError, match="exactly one"):
        answer(scene, "where is the red circle?")
    with pytest.raises(ValueError, match="not one of"):
        answer(scene, "why is the sky blue?")


# ---------------------------------------------------------------- edits


SOURCE = Scene(
    (Obj(0, "circle", "red", "large"), Obj(4, "square", "blue", "small"), Obj(8, "square", "blue", "large")),
    ((0.01, -0.02), (0.0, 0.015), (-0.01, 0.0)),
)


def jitter_of(scene: Scene) -> dict:
    return {o.cell: j for o, j in zip(scene.objects, scene.jitter)}


def test_edit_semantics():
    recolored = apply_edit_instruction(SOURCE, "make the red circle green")
    assert recolored.object_at(0) == Obj(0, "circle", "green", "large")
    assert jitter_of(recolored) == jitter_of(SOURCE)

    moved = apply_edit_instruction(SOURCE, "move the red circle to the bottom left")
    assert moved.object_at(0) is None and moved.object_at(6) == Obj(6, "circle", "red", "large")
    assert jitter_of(moved)[6] == jitter_of(SOURCE)[0]  # no new jitter
    assert jitter_of(moved)[4] == jitter_of(SOURCE)[4]

    removed = apply_edit_instruction(SOURCE, "remove the red circle")
    assert removed.objects == SOURCE.objects[1:] and removed.jitter == SOURCE.jitter[1:]

    added = apply_edit_instruction(SOURCE, "add a small cyan cross at the top right", (0.02, 0.0))
    assert added.object_at(2) == Obj(2, "cross", "cyan", "small") and jitter_of(added)[2] == (0.02, 0.0)


@pytest.mark.parametrize("instruction, message", [
    ("make the blue square red", "2 objects"),  # two blue squares: ambiguous
    ("remove the green circle", "0 objects"),
    ("move the red circle to the center", "not empty"),
    ("add a small red cross at the top left", "not empty"),
    ("make the red circle pink", "unknown color"),
    ("paint everything gold", "not an edit instruction"),
])
def test_bad_edit_instructions_raise(instruction, message):
    with pytest.raises(EditError, match=message):
        apply_edit_instruction(SOURCE, instruction)


def test_random_edits_follow_their_instructions():
    kinds = set()
    for split in ("train", "novel"):
        for i in range(150):
            ex = get_example(split, i)
            edit = ex.edit
            kinds.add(edit.type)
            assert edit.source == ex.scene and edit.source != edit.target
            assert apply_edit_instruction(edit.source, edit.instruction) == edit.target
            # Objects the edit leaves alone keep their jitter.
            before, after = jitter_of(edit.source), jitter_of(edit.target)
            for obj in edit.source.objects:
                if obj in edit.target.objects and edit.type != "move":
                    assert after[obj.cell] == before[obj.cell]
            assert 1 <= len(edit.target.objects) <= 3
    assert kinds == {"recolor", "move", "remove", "add"}


def test_train_edit_and_questions_refuse_a_novel_source():
    scene = Scene((Obj(0, "cross", "red", "large"),))
    with pytest.raises(ValueError, match="novel"):
        questions_for(scene, np.random.default_rng(0), "train")
    with pytest.raises(ValueError, match="novel"):
        make_edit(scene, np.random.default_rng(0), "train")
    assert make_edit(scene, np.random.default_rng(0), "val").source == scene


def test_cells_are_named_in_reading_order():
    assert CELLS[0] == "top left" and CELLS[4] == "center" and CELLS[8] == "bottom right"


def test_every_example_has_an_edit():
    """Full scenes of look-alikes would leave no expressible edit; the generator avoids them."""
    from uniar.data.shapesworld import get_example

    for split in ("train", "test", "novel"):
        for i in range(3000):
            assert get_example(split, i).edit is not None
