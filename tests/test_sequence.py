"""The sequence builder: one format per task, the right targets, prompts that prefix training rows."""

import numpy as np
import pytest
import torch

from helpers import text_tokenizer, vocab
from uniar.data.sequence import GEN, TEXT, UND, ImageData, SequenceBuilder, collate
from uniar.errors import UserError

N = 4  # tokens per image


def builder(discrete=True, max_len=128):
    return SequenceBuilder(text_tokenizer(), vocab(16), gen_len=N, und_len=N, discrete=discrete, max_len=max_len)


def img(*codes):
    return ImageData(codes=np.array(codes))


def test_t2i_trains_the_image_not_the_caption():
    b = builder()
    v = b.vocab
    seq = b.t2i("a large red circle at the top left", img(1, 2, 3, 4))
    assert seq.tokens[:2] == [v.sid("<bos>"), v.sid("<t2i>")]
    boi = seq.tokens.index(v.sid("<boi>"))
    assert not any(seq.targets[:boi + 1])  # caption and <boi> are context
    assert seq.tokens[boi + 1:boi + 1 + N] == [v.visual_offset + c for c in (1, 2, 3, 4)]
    assert all(seq.targets[boi + 1:])  # image, <eoi>, <eos>
    assert seq.tokens[-2:] == [v.sid("<eoi>"), v.sid("<eos>")]


def test_caption_trains_the_caption_not_the_image():
    b = builder()
    seq = b.caption(img(5, 6, 7, 8), "a small blue cross at the center")
    eoi = seq.tokens.index(b.eoi)
    assert not any(seq.targets[:eoi + 1])
    assert all(seq.targets[eoi + 1:])
    assert seq.spans[0].role == UND


def test_vqa_trains_only_the_answer():
    b = builder()
    seq = b.vqa(img(1, 1, 1, 1), "how many objects are there?", "one")
    ans = seq.tokens.index(b.answer)
    assert not any(seq.targets[:ans + 1]) and all(seq.targets[ans + 1:])
    assert b.tok.decode([t for t, on in zip(seq.tokens, seq.targets) if on][:-1]) == "one"


def test_vqa_follow_ups_train_each_answer_and_its_eos_and_keep_the_first_turn():
    b = builder()
    src = img(1, 2, 3, 4)
    one = b.vqa(src, "what shape is at the center?", "cross")
    many = b.vqa(src, "what shape is at the center?", "cross",
                 follow_ups=[("how many objects are there?", "two"), ("is there a red circle?", "no")])
    assert many.tokens[:len(one) - 1] == one.tokens[:-1]  # the first turn, up to its <eos>
    assert many.tokens.count(b.eos) == 3 and many.tokens.count(b.answer) == 3 and len(many.spans) == 1
    trained = [t for t, on in zip(many.tokens, many.targets) if on]
    answers, cur = [], []
    for t in trained:  # each answer ends with its own <eos>
        if t == b.eos:
            answers.append(b.tok.decode(cur))
            cur = []
        else:
            cur.append(t)
    assert answers == ["cross", "two", "no"] and not cur
    # questions are context, never targets: the model is not taught to ask after answering
    q = b.tok.encode("how many objects are there?")
    start = next(i for i in range(len(many)) if many.tokens[i:i + len(q)] == q)
    assert not any(many.targets[start:start + len(q) + 1])
    b.prompt_first = True
    with pytest.raises(UserError, match="image first"):
        b.vqa(src, "what shape is at the center?", "cross", follow_ups=[("how many objects are there?", "two")])


class FakePool:
    """The sampler reads only codes and the split from its pool."""

    split = "train"

    def __init__(self, n: int):
        self.source = [torch.tensor([1, 2, 3, 4])] * n

    def __len__(self):
        return len(self.source)


def test_vqa_per_row_packs_distinct_questions_of_one_scene():
    from uniar.data.tasks import DataConfig, TaskSampler

    b = builder()
    for k in (1, 3, 5):
        sampler = TaskSampler(DataConfig(vqa_per_row=k), b, FakePool(8), None)
        rows = [sampler.make("vqa", np.random.default_rng(s)) for s in range(6)]
        for row in rows:
            asked = row.tokens.count(b.answer)
            assert 1 <= asked <= k and (k == 1 or asked >= min(k, 4))  # every scene has >= 4 questions
            text = b.tok.decode([t for t in row.tokens if t < b.vocab.visual_offset])
            assert len(set(text.split("?"))) == asked + 1  # no question twice


def test_vqa_type_weights_steer_which_questions_are_asked():
    from collections import Counter

    from uniar.data.tasks import DataConfig, TaskSampler

    b = builder()

    def asked(weights):
        sampler = TaskSampler(DataConfig(vqa_type_weights=weights), b, FakePool(40), None)
        kinds = Counter()
        for s in range(300):
            text = b.tok.decode([t for t in sampler.make("vqa", np.random.default_rng(s)).tokens
                                 if t < b.vocab.visual_offset])
            kinds["count" if "how many" in text else "exists" if "is there" in text else
                  "where" if "where is" in text else "color" if "what color" in text else "shape"] += 1
        return kinds

    only = asked({"exists": 1.0})
    assert set(only) == {"exists"}
    tilted = asked({"exists": 4.0, "count": 1.0})
    assert set(tilted) == {"exists", "count"} and tilted["exists"] > 2.5 * tilted["count"]


def test_edit_type_weights_steer_which_edits_are_trained():
    from collections import Counter

    from uniar.data.shapesworld import get_example
    from uniar.data.shapesworld.edits import parse_instruction
    from uniar.data.tasks import DataConfig, TaskSampler

    b = builder()
    pool = FakePool(60)
    pool.target = pool.source

    def drawn(weights):
        sampler = TaskSampler(DataConfig(edit_type_weights=weights, cond_drop=0.0), b, pool, None)
        kinds = Counter()
        for s in range(200):
            row = sampler.make("edit", np.random.default_rng(s))
            text = b.tok.decode([t for t in row.tokens if t < b.vocab.visual_offset]).strip()
            kinds[parse_instruction(text)[0]] += 1
        return kinds

    natural = Counter(get_example("train", i).edit.type for i in range(60))
    assert natural["remove"] < 0.4 * sum(natural.values())  # the pool is not mostly removals
    assert set(drawn({"remove": 1.0})) == {"remove"}
    tilted = drawn({"remove": 4.0, "add": 1.0})
    assert set(tilted) == {"remove", "add"} and tilted["remove"] > 2.5 * tilted["add"]
    # no weights: each row is the example its seed's first draw names, as before the switch existed
    plain = TaskSampler(DataConfig(cond_drop=0.0), b, pool, None)
    for s in range(20):
        row = plain.make("edit", np.random.default_rng(s))
        text = b.tok.decode([t for t in row.tokens if t < b.vocab.visual_offset]).strip()
        assert text == get_example("train", int(np.random.default_rng(s).integers(0, 60))).edit.instruction


def test_aid_question_types_can_be_weighted_in_training_rows():
    from uniar.data.tasks import DataConfig, TaskSampler

    b = builder()
    sampler = TaskSampler(DataConfig(vqa_type_weights={"where_shape": 1.0, "exists_color": 1.0}), b,
                          FakePool(40), None)
    texts = [b.tok.decode([t for t in sampler.make("vqa", np.random.default_rng(s)).tokens
                           if t < b.vocab.visual_offset]) for s in range(60)]
    assert any(" object?" in t and "is there a" in t for t in texts)  # exists_color
    shape_wheres = [t for t in texts if "where is the" in t]
    assert shape_wheres and not any(" object?" in t for t in shape_wheres)  # where by shape only


def test_prompts_are_prefixes_of_training_sequences():
    b = builder()
    src, tgt = img(1, 2, 3, 4), img(4, 3, 2, 1)
    pairs = [
        (b.t2i("a large red circle at the top left"), b.t2i("a large red circle at the top left", tgt)),
        (b.caption(src), b.caption(src, "a small blue cross at the center")),
        (b.vqa(src, "what shape is at the center?"), b.vqa(src, "what shape is at the center?", "cross")),
        (b.edit(src, "remove the red circle"), b.edit(src, "remove the red circle", tgt)),
        (b.text(prompt="hello"), b.text("hello world")),
    ]
    for prompt, full in pairs:
        assert full.tokens[:len(prompt)] == prompt.tokens, prompt.task


def test_prompt_first_puts_questions_and_instructions_before_their_image():
    b = builder()
    b.prompt_first = True
    src, tgt = img(1, 2, 3, 4), img(4, 3, 2, 1)
    q = b.tok.encode("what shape is at the center?")
    seq = b.vqa(src, "what shape is at the center?", "cross")
    assert seq.tokens[2:2 + len(q)] == q and seq.tokens[2 + len(q)] == b.boi  # <bos> <vqa> Q <boi> I <eoi> <answer>
    assert seq.tokens[seq.tokens.index(b.eoi) + 1] == b.answer
    assert b.tok.decode([t for t, on in zip(seq.tokens, seq.targets) if on][:-1]) == "cross"
    e = b.edit(src, "remove the red circle", tgt)
    ins = b.tok.encode("remove the red circle")
    assert e.tokens[2:2 + len(ins)] == ins and [s.role for s in e.spans] == [UND, GEN]
    assert b.edit(src, None, tgt).tokens[2:4] == [b.uncond, b.boi]
    for prompt, full in [(b.vqa(src, "what shape is at the center?"), seq), (b.edit(src, "remove the red circle"), e)]:
        assert full.tokens[:len(prompt)] == prompt.tokens  # sampling prompts stay prefixes


def test_dropped_condition_uses_uncond_token():
    b = builder()
    seq = b.t2i(None, img(1, 2, 3, 4))
    assert seq.tokens[2] == b.uncond and seq.tokens[3] == b.boi
    e = b.edit(img(1, 2, 3, 4), None, img(1, 2, 3, 4))
    assert b.uncond in e.tokens and len(e.spans) == 2


def test_interleaved_trains_everything_including_opening_images():
    b = builder()
    seq = b.interleaved(["a caption", img(1, 2, 3, 4), "make it blue", img(2, 2, 2, 2)])
    assert seq.targets[2:] == [True] * (len(seq) - 2)
    assert [s.role for s in seq.spans] == [GEN, GEN]
    assert seq.tokens.count(b.boi) == 2 and seq.tokens.count(b.eoi) == 2


def test_continuous_images_use_placeholders():
    b = builder(discrete=False)
    lat = ImageData(latents=torch.randn(N, 3))
    seq = b.t2i("x", lat)
    span = seq.spans[0]
    assert seq.tokens[span.start:span.start + N] == [b.img_mask] * N
    assert seq.images[0] is lat


def test_random_order_permutes_codes_and_records_next_positions():
    b = builder()
    order = [2, 0, 3, 1]
    seq = b.t2i("x", img(10, 11, 12, 13), order=order)
    s = seq.spans[0]
    assert [t - b.vocab.visual_offset for t in seq.tokens[s.start:s.start + N]] == [12, 10, 13, 11]
    batch = collate([seq], pad_id=0)
    assert batch.image_pos[0, s.start:s.start + N].tolist() == order
    # the token before each image token (starting with <boi>) is told where the next one goes
    assert batch.next_image_pos[0, s.start - 1:s.start - 1 + N].tolist() == order
    with pytest.raises(ValueError):
        b.t2i("x", img(1, 2, 3, 4), order=[0, 0, 1, 2])


def test_collate_left_and_right_padding():
    b = builder()
    short, long = b.text(prompt="a"), b.text(prompt="a much longer prompt than the other")
    for side in ("left", "right"):
        batch = collate([short, long], pad_id=b.tok.pad_id, side=side)
        n = len(short)
        row = batch.mask[0]
        assert int(row.sum()) == n
        assert batch.positions[0][row].tolist() == list(range(n))
        real = batch.ids[0][row].tolist()
        assert real == short.tokens
        if side == "left":
            assert bool(row[-1]) and not bool(row[0])
        else:
            assert bool(row[0]) and not bool(row[-1])
    assert (batch.role == TEXT).all()


def test_overlong_sequence_is_a_clear_error():
    b = builder(max_len=12)
    with pytest.raises(UserError, match="context"):
        b.t2i("a large red circle at the top left and a small blue cross at the center", img(1, 2, 3, 4))


def test_wrong_number_of_codes_is_a_clear_error():
    with pytest.raises(UserError, match="VQ codes"):
        builder().t2i("x", img(1, 2))


def test_exists_near_miss_asks_about_pairs_that_share_a_color_or_a_shape():
    from uniar.data.shapesworld import get_example
    from uniar.data.tasks import DataConfig, TaskSampler

    def near_share(p):
        sampler = TaskSampler(DataConfig(vqa_type_weights={"exists": 1.0}, exists_near_miss=p), builder(), FakePool(60), None)
        near = no = yes = 0
        for s in range(300):
            rng = np.random.default_rng(s)
            i = int(np.random.default_rng(s).integers(0, 60))  # the index make() draws first
            ex = get_example("train", i, 3)
            (q,) = sampler.pick_questions(ex.questions, rng, ex.scene)
            color, shape = q.question[len("is there a "):-1].split()
            truth = any(o.color == color and o.shape == shape for o in ex.scene.objects)
            assert q.answer == ("yes" if truth else "no")  # the answer stays right
            if truth:
                yes += 1
                continue
            no += 1
            near += any(o.color == color or o.shape == shape for o in ex.scene.objects)
        return near / no, yes / (yes + no)

    base_near, base_yes = near_share(0.0)
    all_near, all_yes = near_share(1.0)
    assert all_near == 1.0 and base_near < 0.8
    assert abs(all_yes - base_yes) < 1e-9  # only which `no` questions are asked changes
    with pytest.raises(UserError, match="exists_near_miss"):
        from uniar.config import apply_overrides
        from uniar.train.config import TrainConfig

        apply_overrides(TrainConfig(), ["data.exists_near_miss=1.5"]).validate()


def test_a_stage_can_ask_its_own_question_types(tmp_path):
    from uniar.data.tasks import DataConfig, TaskSampler

    b = builder()
    sampler = TaskSampler(DataConfig(vqa_type_weights={"count": 1.0}), b, FakePool(40), None)

    def texts(**kw):
        return [b.tok.decode([t for t in row.tokens if t < b.vocab.visual_offset])
                for row in sampler.batch({"vqa": 1.0}, 30, 0, 0, **kw)]

    assert all("how many" in t for t in texts())
    assert all("is there" in t for t in texts(vqa_type_weights={"exists": 1.0}))
