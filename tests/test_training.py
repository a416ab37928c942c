"""The training loop: it learns, it resumes exactly, it checkpoints atomically, it runs data-parallel."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import text_tokenizer, tiny_train_config, tiny_ugen, tiny_unifluid_train_config
from uniar.data.sequence import ImageData, SequenceBuilder, collate
from uniar.errors import CheckpointError, UserError
from uniar.train.loop import Trainer, read_metrics
from uniar.utils.precision import compiler_available, use_compile


def losses(out_dir):
    return [float(r["loss"]) for r in read_metrics(out_dir)]


def test_tiny_model_overfits_a_batch():
    torch.manual_seed(0)
    model = tiny_ugen(n_visual=16)
    b = SequenceBuilder(text_tokenizer(), model.vocab, gen_len=8, und_len=8, discrete=True, max_len=256)
    rng = np.random.default_rng(0)
    seqs = [b.t2i(f"prompt number {i}", ImageData(codes=rng.integers(0, 16, 8))) for i in range(4)]
    seqs += [b.caption(ImageData(codes=rng.integers(0, 16, 8)), f"caption {i}") for i in range(4)]
    batch = collate(seqs, pad_id=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        parts = model.loss(batch)
        loss = parts.components["ce"] / model.target_counts(batch)["ce"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.05
    assert set(parts.per_task_sum) == {"t2i", "caption"}


def test_sequence_loss_norm_averages_rows_and_survives_micro_batching(tmp_path, tiny_vq):
    """loss_norm=sequence: the loss is the mean of per-row mean CEs, also over grad-accum micro-batches."""
    torch.manual_seed(0)
    model = tiny_ugen(n_visual=16)
    b = SequenceBuilder(text_tokenizer(), model.vocab, gen_len=8, und_len=8, discrete=True, max_len=256)
    rng = np.random.default_rng(0)
    batch = collate([b.t2i("a prompt", ImageData(codes=rng.integers(0, 16, 8))),
                     b.vqa(ImageData(codes=rng.integers(0, 16, 8)), "what color?", "red"),
                     b.text("some plain text for the model")], pad_id=0)
    model.loss_norm = "sequence"
    with torch.no_grad():
        total = model.loss(batch).components["ce"]
        sel = model._targets(batch, None)
        ce = torch.nn.functional.cross_entropy(
            model.logits(model.hidden(model.embed(batch.ids), batch.positions, None)[:, :-1][sel]),
            batch.ids[:, 1:][sel], reduction="none")
        rows = torch.arange(3)[:, None].expand_as(sel)[sel]
        want = sum(ce[rows == r].mean() for r in range(3))
    assert model.target_counts(batch) == {"ce": 3}
    torch.testing.assert_close(total, want, rtol=1e-5, atol=1e-5)

    for name, accum in [("one", 1), ("grouped", 3)]:
        cfg = tiny_train_config(tmp_path / name, tiny_vq, steps=3)
        cfg.model.loss_norm = "sequence"
        cfg.optim.grad_accum, cfg.optim.group_by_length, cfg.optim.bf16 = accum, accum > 1, False
        Trainer(cfg, progress=False).run()
    np.testing.assert_allclose(losses(tmp_path / "grouped"), losses(tmp_path / "one"), rtol=1e-4, atol=1e-6)


def test_stage_loss_weights_scale_their_tasks_rows_and_reach_the_batches(tmp_path, tiny_vq):
    """A stage's loss_weights multiply each of its tasks' rows in the loss; the normaliser stays the row count."""
    torch.manual_seed(0)
    model = tiny_ugen(n_visual=16)
    model.loss_norm = "sequence"
    b = SequenceBuilder(text_tokenizer(), model.vocab, gen_len=8, und_len=8, discrete=True, max_len=256)
    rng = np.random.default_rng(0)
    rows = [b.t2i("a prompt", ImageData(codes=rng.integers(0, 16, 8))), b.text("some plain text for the model")]
    with torch.no_grad():
        per_row = [float(model.loss(collate([r], pad_id=0)).components["ce"]) for r in rows]
        batch = collate(rows, pad_id=0)
        batch.row_weight = torch.tensor([1.0, 3.0])
        weighted = model.loss(batch).components["ce"]
    torch.testing.assert_close(float(weighted), per_row[0] + 3 * per_row[1], rtol=1e-5, atol=1e-5)
    assert model.target_counts(batch) == {"ce": 2}

    cfg = tiny_train_config(tmp_path / "run", tiny_vq, steps=2)
    cfg.stages[-1].loss_weights = {"text": 2.5}
    trainer = Trainer(cfg, progress=False)
    for mb in trainer.micro_batches(cfg.steps - 1):
        assert mb.row_weight.tolist() == [2.5 if t == "text" else 1.0 for t in mb.tasks]
    cfg.stages[-1].loss_weights = {"txt": 2.0}
    with pytest.raises(UserError, match="loss_weights"):
        cfg.validate()


def test_turn_loss_norm_weighs_every_answer_of_a_multi_question_row_as_a_row():
    """loss_norm=turn: each unbroken run of trained tokens counts once; on one-turn rows it is "sequence"."""
    from uniar.models.losses import turn_index

    torch.testing.assert_close(turn_index(torch.tensor([[0, 1, 1, 0, 1], [1, 0, 0, 1, 1]], dtype=torch.bool)),
                               torch.tensor([[-1, 0, 0, -1, 1], [2, -1, -1, 3, 3]]))
    torch.manual_seed(0)
    model = tiny_ugen(n_visual=16)
    b = SequenceBuilder(text_tokenizer(), model.vocab, gen_len=8, und_len=8, discrete=True, max_len=256)
    rng = np.random.default_rng(0)
    one_turn = [b.t2i("a prompt", ImageData(codes=rng.integers(0, 16, 8))), b.text("some plain text")]
    multi = b.vqa(ImageData(codes=rng.integers(0, 16, 8)), "what color?", "red",
                  follow_ups=[("what shape?", "circle"), ("how many?", "two")])
    with torch.no_grad():
        batch = collate(one_turn, pad_id=0)
        model.loss_norm = "sequence"
        want = model.loss(batch).components["ce"]
        model.loss_norm = "turn"
        torch.testing.assert_close(model.loss(batch).components["ce"], want)
        assert model.target_counts(batch) == {"ce": 2}

        batch = collate([multi], pad_id=0)
        sel = model._targets(batch, None)
        ce = torch.nn.functional.cross_entropy(
            model.logits(model.hidden(model.embed(batch.ids), batch.positions, None)[:, :-1][sel]),
            batch.ids[:, 1:][sel], reduction="none")
        turns = turn_index(sel)[sel]
        assert int(torch.unique(turns).numel()) == 3  # each answer with its <eos>
        want = sum(ce[turns == t].mean() for t in torch.unique(turns))
        torch.testing.assert_close(model.loss(batch).components["ce"], want, rtol=1e-5, atol=1e-5)
        assert model.target_counts(batch) == {"ce": 3}
        model.loss_norm = "sequence"
        assert model.target_counts(batch) == {"ce": 1}  # the same row: its three answers share one weight


def test_per_modality_softmax_is_the_likelihood_the_sampler_draws_from():
    """softmax=per_modality: a text target's CE is over text ids, a visual target's over visual ids."""
    torch.manual_seed(0)
    model = tiny_ugen(n_visual=16)
    b = SequenceBuilder(text_tokenizer(), model.vocab, gen_len=8, und_len=8, discrete=True, max_len=256)
    rng = np.random.default_rng(0)
    batch = collate([b.t2i("a prompt", ImageData(codes=rng.integers(0, 16, 8))),
                     b.text("some plain text for the model")], pad_id=0)
    off = model.vocab.visual_offset
    with torch.no_grad():
        full = model.loss(batch).components["ce"]
        model.softmax = "per_modality"
        per = model.loss(batch)
        sel = model._targets(batch, None)
        logits = model.logits(model.hidden(model.embed(batch.ids), batch.positions, None)[:, :-1][sel])
        target = batch.ids[:, 1:][sel]
        visual = target >= off
        want = (torch.nn.functional.cross_entropy(logits[visual][:, off:], target[visual] - off, reduction="sum")
                + torch.nn.functional.cross_entropy(logits[~visual][:, :off], target[~visual], reduction="sum"))
    assert visual.any() and (~visual).any()
    torch.testing.assert_close(per.components["ce"], want, rtol=1e-5, atol=1e-5)
    assert float(per.components["ce"]) < float(full)  # the other modality's mass is no longer lost
    with pytest.raises(Exception, match="model.softmax"):
        type(model)(model.backbone, model.vocab, softmax="text_only")


def test_heldout_perplexity_over_text_ids_only():
    from types import SimpleNamespace

    from uniar.eval.evaluate import heldout_perplexity

    torch.manual_seed(0)
    model = tiny_ugen(n_visual=64).eval()
    b = SequenceBuilder(text_tokenizer(), model.vocab, gen_len=8, und_len=8, discrete=True, max_len=256)
    pipe = SimpleNamespace(model=model, builder=b, text_tok=text_tokenizer())
    full = heldout_perplexity(pipe, windows=8)
    ids_only = heldout_perplexity(pipe, windows=8, softmax="per_modality")
    assert ids_only < full and model.softmax == "full"  # the mass on visual ids is gone; the switch is restored
    model.softmax = "per_modality"
    assert heldout_perplexity(pipe, windows=8) == pytest.approx(ids_only)


def test_heldout_perplexity_by_source():
    from types import SimpleNamespace

    from uniar.errors import UserError
    from uniar.eval.evaluate import heldout_perplexity

    torch.manual_seed(0)
    model = tiny_ugen(n_visual=64).eval()
    b = SequenceBuilder(text_tokenizer(), model.vocab, gen_len=8, und_len=8, discrete=True, max_len=256)
    pipe = SimpleNamespace(model=model, builder=b, text_tok=text_tokenizer())
    parts = {s: heldout_perplexity(pipe, windows=16, source=s) for s in ("pydoc", "shapesworld")}
    whole = heldout_perplexity(pipe, windows=16)
    assert parts["pydoc"] != parts["shapesworld"]  # each reads its own text
    assert min(parts.values()) * 0.95 <= whole <= max(parts.values()) * 1.05  # the whole mixes the two
    with pytest.raises(UserError, match="unknown held-out text source 'wiki'"):
        heldout_perplexity(pipe, windows=4, source="wiki")


def test_image_size_that_the_tokenizer_does_not_read_is_a_clear_error(tmp_path, tiny_vq):
    from uniar.errors import UserError

    cfg = tiny_train_config(tmp_path / "run", tiny_vq)
    cfg.data.image_size = 48  # the tiny VQ reads 64 px images
    with pytest.raises(UserError, match="data.image_size is 48 but the image tokenizer .* works on 64 px"):
        Trainer(cfg, progress=False)


def test_resumed_run_matches_uninterrupted_run(tmp_path, tiny_vq):
    full = tiny_train_config(tmp_path / "full", tiny_vq, steps=6, checkpoint_every=3)
    Trainer(full, progress=False).run()
    resumed = tiny_train_config(tmp_path / "resumed", tiny_vq, steps=6)
    trainer = Trainer(resumed, resume=str(tmp_path / "full" / "checkpoints" / "step_3"), progress=False)
    assert trainer.start_step == 3
    saved = json.loads((tmp_path / "full" / "checkpoints" / "step_3" / "training_state.json").read_text())
    assert trainer.progressive.state_dict() == saved["progressive_vocab"]  # restored curriculum
    trainer.run()
    a, b = losses(tmp_path / "full"), losses(tmp_path / "resumed")
    assert len(a) == 6 and len(b) == 3
    np.testing.assert_allclose(b, a[3:], rtol=1e-5)
    rows = read_metrics(tmp_path / "full")
    assert float(rows[0]["active_ids"]) == 0.0 and 0 < float(rows[-1]["active_ids"]) <= 1
    assert "loss_text" in rows[0] and any(r.get("loss_t2i") for r in rows)
    assert (tmp_path / "full" / "metrics.png").is_file()



def test_init_from_starts_from_the_weights_with_a_fresh_schedule(tmp_path, tiny_vq):
    from uniar.errors import UserError
    from uniar.utils.io import load_safetensors

    Trainer(tiny_train_config(tmp_path / "first", tiny_vq, steps=3), progress=False).run()
    final = tmp_path / "first" / "checkpoints" / "final"
    tuned = Trainer(tiny_train_config(tmp_path / "tuned", tiny_vq, steps=2, init_from=str(final)), progress=False)
    assert tuned.start_step == 0
    saved = load_safetensors(final / "model.safetensors")
    for name, value in tuned.model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    fresh = Trainer(tiny_train_config(tmp_path / "fresh", tiny_vq, steps=2), progress=False)
    assert not all(torch.equal(v, saved[k]) for k, v in fresh.model.state_dict().items())
    other = tiny_train_config(tmp_path / "other", tiny_vq, steps=2, init_from=str(final))
    other.model.text_tokenizer = "bpe:640"
    with pytest.raises(UserError, match="vocabulary"):
        Trainer(other, progress=False)
    with pytest.raises(CheckpointError, match="not found"):
        Trainer(tiny_train_config(tmp_path / "x", tiny_vq, init_from=str(tmp_path / "nowhere")), progress=False)


def test_stage_restart_lr_warms_up_again_and_decays_to_its_stretch_end():
    import math

    from uniar.train.config import StageConfig, TrainConfig
    from uniar.train.loop import lr_factor

    cfg = TrainConfig(steps=100, stages=[StageConfig("A", 0.5, {"text": 1.0}), StageConfig("B", 0.5)])
    cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio = 1e-3, 10, 0.1
    plain = [lr_factor(s, cfg) for s in range(100)]
    # no restart: one warm-up and one cosine over the whole run
    expected = [(s + 1) / 10 if s < 10 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 10) / 90))
                for s in range(100)]
    np.testing.assert_allclose(plain, expected)
    cfg.stages[1].restart_lr = 3e-4
    restarted = [lr_factor(s, cfg) for s in range(100)]
    assert cfg.lr_segments() == [(0, 50, 1e-3), (50, 100, 3e-4)]
    assert restarted[0] == pytest.approx(0.1) and restarted[9] == pytest.approx(1.0)
    assert restarted[49] == pytest.approx(0.1, abs=0.01)  # stage A's own cosine has run its course
    assert restarted[50] == pytest.approx(0.3 / 10) and restarted[59] == pytest.approx(0.3)
    assert restarted[99] == pytest.approx(0.03, abs=0.003)
    assert max(restarted[50:]) == pytest.approx(0.3)
    cfg.stages[1].restart_lr = 0.0
    with pytest.raises(UserError, match="restart_lr"):
        cfg.validate()


def test_stage_reset_moments_gives_a_fresh_optimizer_and_resumes_exactly(tmp_path, tiny_vq):
    full = tiny_train_config(tmp_path / "full", tiny_vq, steps=6, checkpoint_every=2)
    full.stages[1].reset_moments = True  # stage B starts at step 2
    trainer = Trainer(full, progress=False)
    trainer.run()
    counts = {int(state["step"]) for state in trainer.optimizer.state.values()}
    assert counts == {4}  # steps since stage B began, not since the run began
    resumed = tiny_train_config(tmp_path / "resumed", tiny_vq, steps=6)
    resumed.stages[1].reset_moments = True
    again = Trainer(resumed, resume=str(tmp_path / "full" / "checkpoints" / "step_2"), progress=False)
    again.run()
    np.testing.assert_allclose(losses(tmp_path / "resumed"), losses(tmp_path / "full")[2:], rtol=1e-5)


def test_length_grouped_micro_batches_train_like_one_batch(tmp_path, tiny_vq):
    """group_by_length only repartitions the same global batch: same losses, less padding."""
    runs = {}
    for name, accum, grouped in [("one", 1, False), ("grouped", 3, True)]:
        cfg = tiny_train_config(tmp_path / name, tiny_vq, steps=3)
        cfg.optim.grad_accum, cfg.optim.group_by_length = accum, grouped
        cfg.optim.bf16 = False
        trainer = Trainer(cfg, progress=False)
        runs[name] = trainer
        trainer.run()
    np.testing.assert_allclose(losses(tmp_path / "grouped"), losses(tmp_path / "one"), rtol=1e-4, atol=1e-6)
    one, grouped = runs["one"].micro_batches(1), runs["grouped"].micro_batches(1)
    padded = lambda bs: sum(b.mask.numel() for b in bs)  # noqa: E731
    assert sum(int(b.mask.sum()) for b in grouped) == sum(int(b.mask.sum()) for b in one)
    assert padded(grouped) < padded(one)
    lengths = [int(n) for b in grouped for n in b.mask.sum(1)]
    assert lengths == sorted(lengths)

def test_periodic_eval_in_the_text_only_stage_skips_drawing(tmp_path, tiny_vq):
    """An evaluation that falls in stage A of a progressive run (no visual id active) must not stop training."""
    import json

    from uniar.train.evaluation import periodic_eval

    cfg = tiny_train_config(tmp_path / "run", tiny_vq, steps=6)  # stage A = steps 1-2
    cfg.eval.every, cfg.eval.n, cfg.eval.final_n = 1, 2, 2
    Trainer(cfg, progress=False).run(evaluate_fn=periodic_eval)
    evals = [json.loads(line) for line in open(tmp_path / "run" / "eval.jsonl")]
    assert [e["step"] for e in evals] == [1, 2, 3, 4, 5, 6]
    assert "t2i_exact" not in evals[0] and "text_ppl" in evals[0] and "caption_exact" in evals[0]
    assert "t2i_exact" in evals[-1] and "edit_exact" in evals[-1]


def test_eval_n_zero_turns_that_evaluation_off(tmp_path, tiny_vq):
    from uniar.errors import UserError
    from uniar.train.evaluation import periodic_eval

    cfg = tiny_train_config(tmp_path / "run", tiny_vq, steps=4)
    cfg.eval.every, cfg.eval.n, cfg.eval.final_n = 2, 2, 0
    result = Trainer(cfg, progress=False).run(evaluate_fn=periodic_eval)
    assert "eval" not in result and (tmp_path / "run" / "checkpoints" / "final").is_dir()
    cfg.eval.final_n = -1
    with pytest.raises(UserError, match="eval.final_n must be >= 0"):
        cfg.validate()


def test_checkpoint_reloads_to_identical_samples(tmp_path, tiny_vq):
    from uniar.sample.decode import SamplingConfig
    from uniar.sample.pipeline import Pipeline

    cfg = tiny_train_config(tmp_path / "run", tiny_vq, steps=4)  # stage B activates 2 ids
    trainer = Trainer(cfg, progress=False)
    trainer.run()
    live = Pipeline(trainer.model, trainer.text_tok, trainer.image_tok, trainer.builder, cfg, trainer.progressive)
    loaded = Pipeline.from_checkpoint(tmp_path / "run" / "checkpoints" / "final")
    s = SamplingConfig(seed=5, cfg_scale=2.0)
    prompts = ["a large red circle at the top left", "a small blue cross at the center"]
    np.testing.assert_array_equal(live.t2i(prompts, s), loaded.t2i(prompts, s))
    img = live.t2i(prompts[:1], s)
    assert live.caption(img) == loaded.caption(img)


def test_corrupt_or_incomplete_checkpoint_is_a_clear_error(tmp_path, tiny_vq):
    from uniar.sample.pipeline import Pipeline

    cfg = tiny_train_config(tmp_path / "run", tiny_vq, steps=1)
    Trainer(cfg, progress=False).run()
    final = tmp_path / "run" / "checkpoints" / "final"
    weights = final / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        Pipeline.from_checkpoint(final)
    (final / "config.json").unlink()
    with pytest.raises(CheckpointError, match="missing config.json"):
        Pipeline.from_checkpoint(final)
    with pytest.raises(CheckpointError, match="not found"):
        Pipeline.from_checkpoint(tmp_path / "nowhere")


DIST_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from helpers import tiny_train_config
from uniar.train.loop import Trainer, read_metrics
from uniar.utils.precision import compiler_available, use_compile
cfg = tiny_train_config({out!r}, {vq!r}, steps=3)
cfg.optim.grad_accum = {accum}
t = Trainer(cfg, progress=False, parallel={parallel!r})
t.run()
if t.info.is_main:
    print("LOSSES", json.dumps([float(r["loss"]) for r in read_metrics({out!r})]))
"""


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process(tmp_path, tiny_vq, parallel):
    tests = str(Path(__file__).parent)
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(nproc, out, accum):
        script = tmp_path / f"run_{nproc}.py"
        script.write_text(DIST_SCRIPT.format(tests=tests, out=str(out), vq=str(tiny_vq), accum=accum,
                                             parallel=parallel))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(script)] if nproc > 1 else [sys.executable, str(script)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        line = [l for l in res.stdout.splitlines() if l.startswith("LOSSES")][0]
        return json.loads(line.split(" ", 1)[1])

    one = run(1, tmp_path / "one", accum=2)  # one process, two micro-batches = the same global batch
    two = run(2, tmp_path / "two", accum=1)
    np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not compiler_available("cpu"), reason="torch.compile needs a C++ compiler on CPU")
@pytest.mark.parametrize("family", ["ugen", "unifluid"])
def test_compiled_training_matches_eager(tmp_path, tiny_vq, tiny_kl, family):
    """optim.compile changes kernels, not the model: the same run gives the same losses, and what it
    saves samples like an eager run's (decoding with a KV cache never goes through the compiled path)."""
    make = (lambda out, **kw: tiny_train_config(out, tiny_vq, steps=4, **kw)) if family == "ugen" else \
        (lambda out, **kw: tiny_unifluid_train_config(out, tiny_kl, steps=4, **kw))
    for name, compiled in (("eager", False), ("compiled", True)):
        cfg = make(tmp_path / name)
        cfg.optim.compile = compiled
        trainer = Trainer(cfg, progress=False)
        assert trainer.compiled == compiled
        trainer.run()
    np.testing.assert_allclose(losses(tmp_path / "compiled"), losses(tmp_path / "eager"), rtol=2e-4)


def test_compile_without_a_compiler_is_a_clear_error(tmp_path, tiny_vq, monkeypatch):
    import uniar.train.loop as loop

    monkeypatch.setattr(loop, "compiler_available", lambda device: False)
    cfg = tiny_train_config(tmp_path / "run", tiny_vq)
    cfg.optim.compile = True
    with pytest.raises(UserError, match="optim.compile=true, but torch.compile cannot build kernels here"):
        Trainer(cfg, progress=False)
    monkeypatch.setattr("uniar.utils.precision.shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert not use_compile("auto", "cpu") and use_compile(False, "cpu") is False
