"""The UniFluid benchmark scripts run end to end (tiny models, a few steps) and aggregate their run files."""

import json
import sys
from pathlib import Path

import pytest
import torch

from helpers import save_tiny_kl

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["model.backbone.hidden_size=64", "model.backbone.n_layers=2", "model.backbone.n_heads=4",
        "model.backbone.n_kv_heads=2", "model.backbone.mlp_hidden=128", "data.pool_size=64",
        "model.text_tokenizer=bpe:512", "optim.batch_size=8", "model.unifluid.head.width=32",
        "model.unifluid.head.depth=1", "model.unifluid.head.sample_steps=4", "data.image_size=64",  # the tiny KL reads 64 px
        "optim.compile=false"]  # compiling costs more than a few steps save


@pytest.fixture(scope="module")
def scripts():
    torch.set_num_threads(1)
    sys.path.insert(0, str(BENCHMARKS))
    import unifluid_ablations
    import unifluid_tiny

    yield unifluid_tiny, unifluid_ablations
    sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def kl(tmp_path_factory):
    return save_tiny_kl(tmp_path_factory.mktemp("kl") / "kl")


def common(tmp_path, kl):
    return ["--steps", "2", "-n", "2", "--seeds", "0", "--threads", "1", "--no-progress", "--no-fid",
            "--kl-tokenizer", str(kl), "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]


def test_lambda_sweep_saves_runs_report_and_plot_then_reaggregates(scripts, kl, tmp_path):
    _, ablations = scripts
    args = ["lambda", "--lambdas", "0.5", "2", *common(tmp_path, kl), *TINY]
    assert ablations.main(args) == 0
    results = tmp_path / "results"
    runs = sorted(p.name for p in (results / "unifluid_lambda").iterdir())
    assert runs == ["lambda0.5_seed0.json", "lambda2_seed0.json"]
    run = json.loads((results / "unifluid_lambda" / "lambda2_seed0.json").read_text())
    assert run["config"]["model"]["unifluid"]["loss_lambda"] == 2.0 and run["steps"] == 2
    assert {"t2i_exact", "caption_exact", "vqa_acc", "edit_exact", "text_ppl"} <= set(run["metrics"]["test"])
    assert (results / "unifluid_lambda.png").stat().st_size > 0

    # a second seed added by hand: --report-only aggregates it without training anything
    extra = dict(run, seed=1, metrics={**run["metrics"], "test": {**run["metrics"]["test"], "t2i_exact": 1.0}})
    (results / "unifluid_lambda" / "lambda2_seed1.json").write_text(json.dumps(extra))
    assert ablations.main(["lambda", "--report-only", "--results", str(results)]) == 0
    agg = json.loads((results / "unifluid_lambda.json").read_text())["arms"]
    assert list(agg) == ["lambda0.5", "lambda2"]  # ordered by λ
    assert agg["lambda2"]["seeds"] == [0, 1]
    mean, std = agg["lambda2"]["metrics"]["test"]["t2i_exact"]
    assert mean == pytest.approx((run["metrics"]["test"]["t2i_exact"] + 1.0) / 2) and std > 0
    assert "lambda2 (seeds [0, 1])" in (results / "unifluid_lambda.md").read_text()
    assert not (tmp_path / "runs" / "lambda2_seed1").exists()

    # rerunning with another budget refuses to mix it into the same results
    with pytest.raises(Exception, match=r"holds a different run \(config.steps: 2 -> 3"):
        ablations.main(["lambda", "--lambdas", "2", *common(tmp_path, kl)[2:], "--steps", "3", *TINY])

    # the order study's raster arm at λ 2 is the lambda2 run (the preset is raster): reused, not retrained
    assert ablations.main(["order", *common(tmp_path, kl), *TINY, "model.unifluid.loss_lambda=2"]) == 0
    raster = json.loads((results / "unifluid_order" / "raster_seed0.json").read_text())
    assert raster["reused_from"].endswith("lambda2_seed0.json") and raster["metrics"] == run["metrics"]
    assert raster["arm"] == "raster" and raster["overrides"][-1] == "model.unifluid.loss_lambda=2"
    assert not (tmp_path / "runs" / "raster_seed0").exists() and (tmp_path / "runs" / "random_seed0").is_dir()
    # a seed added later must be the same arm: here the preset's λ would silently replace the λ 2 of seed 0
    with pytest.raises(Exception, match=r"ran arm raster differently \(config.model.unifluid.loss_lambda: 2"):
        ablations.main(["order", "--arms", "raster", *common(tmp_path, kl)[:5], "1", *common(tmp_path, kl)[6:], *TINY])
    with pytest.raises(Exception, match="no arm diagonal in study order"):
        ablations.main(["order", "--arms", "diagonal", *common(tmp_path, kl), *TINY])


def test_headline_scores_test_and_novel_with_a_learning_curve(scripts, kl, tmp_path):
    tiny, _ = scripts
    args = [*common(tmp_path, kl), "--curve-minutes", "0.001", "--curve-every", "5", "--curve-n", "2",
            *TINY, "eval.final_n=2", "eval.n=2"]
    assert tiny.main(args) == 0
    results = tmp_path / "results"
    head = json.loads((results / "unifluid_tiny" / "headline_seed0.json").read_text())
    assert set(head["metrics"]) == {"test", "novel", "run"}
    assert head["sampling"]["cfg_scale"] == 2.0 and head["budget"] == {"steps": 2}
    assert [p["step"] for p in head["curve"]["points"]] == [2]
    curve = json.loads((results / "unifluid_tiny" / "curve_seed0.json").read_text())
    steps = [p["step"] for p in curve["curve"]["points"]]
    assert steps[0] == 5 and steps[-1] == curve["steps"] >= 10  # the budget's minimum of 10 steps
    assert {"t2i_acc_cell", "t2i_acc_color"} <= set(curve["curve"]["points"][0])
    minutes = [p["train_min"] for p in curve["curve"]["points"]]
    assert minutes == sorted(minutes) and minutes[0] > 0
    assert (results / "unifluid_tiny_curve.png").stat().st_size > 0
    assert "| t2i_exact |" in (results / "unifluid_tiny.md").read_text()


def test_caption_swap_scores_what_the_drawn_colours_follow(tmp_path, tiny_vq):
    from helpers import tiny_train_config
    from uniar.train.loop import Trainer

    Trainer(tiny_train_config(tmp_path / "run", tiny_vq, steps=4), progress=False).run()  # 2 ids active
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import caption_swap
    finally:
        sys.path.remove(str(BENCHMARKS))
    ckpt = str(tmp_path / "run" / "checkpoints" / "final")
    assert caption_swap.main([ckpt, "-n", "3", "--results", str(tmp_path / "results")]) == 0
    report = json.loads((tmp_path / "results" / "caption_swap.json").read_text())
    row = report["rows"][0]
    assert row["family"] == "ugen" and row["objects"] >= 3
    assert 0.0 <= row["follows_image"] + row["follows_caption"] <= 1.0  # a colour cannot be both
    assert (tmp_path / "results" / "caption_swap.md").is_file()


def test_progressive_study_refuses_a_seed_of_another_config(tmp_path, monkeypatch):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import progressive_vs_vanilla as pvv
    finally:
        sys.path.remove(str(BENCHMARKS))
    from uniar.errors import UserError

    monkeypatch.setattr(pvv, "RUNS", tmp_path)
    args = type("Args", (), {"tokenizer": None, "steps": 5, "out": str(tmp_path / "runs"), "overrides": []})()
    progressive, vanilla = pvv.arm_config("progressive", 0, args), pvv.arm_config("vanilla", 1, args)
    pvv.check_same_study(progressive)  # an empty study takes anything
    (tmp_path / "progressive_seed0.json").write_text(json.dumps({"config": pvv.shared_config(progressive)}))
    pvv.check_same_study(vanilla)  # the other arm and another seed are the same study
    args.overrides = ["model.loss_norm=token"]
    with pytest.raises(UserError, match="differs in model"):
        pvv.check_same_study(pvv.arm_config("vanilla", 1, args))
    (tmp_path / "vanilla_seed0.json").write_text(json.dumps({"arm": "vanilla"}))  # an earlier, config-less record
    with pytest.raises(UserError, match="saved without its config"):
        pvv.check_same_study(progressive)


def test_vqa_lookup_groups_questions_by_how_they_find_the_object(tmp_path, tiny_vq):
    from helpers import tiny_train_config
    from uniar.train.loop import Trainer

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import vqa_lookup
    finally:
        sys.path.remove(str(BENCHMARKS))
    import numpy as np
    from uniar.data.shapesworld import get_example

    examples = [get_example("test", i, 3) for i in range(20)]
    qs = vqa_lookup.lookup_questions(examples, "test", np.random.default_rng(0))
    for q in qs:  # every group asks what it says it asks
        objects = examples[q["scene"]].scene.objects
        if q["group"] == "where":
            continue
        color, shape = q["q"].question[len("is there a "):-1].split()
        hit = any(o.color == color and o.shape == shape for o in objects)
        near = any(o.color == color or o.shape == shape for o in objects)
        assert q["group"] == ("exists_yes" if hit else "exists_no_near" if near else "exists_no_far")
        if q["group"] == "exists_no_near":
            shares = {a for a, v in (("color", color), ("shape", shape)) if any(getattr(o, a) == v for o in objects)}
            assert set(q["shares"].split("+")) == shares
    truth = [q["q"].answer for q in qs]
    perfect = vqa_lookup.score(qs, truth, examples)
    assert all(v["acc"] == 1.0 for v in perfect.values())
    assert perfect["where"]["n"] == sum(q["group"] == "where" for q in qs)
    wrong = vqa_lookup.score(qs, ["nothing"] * len(qs), examples)
    assert wrong["where_names_an_occupied_cell"]["acc"] == 0.0 and wrong["exists_yes"]["acc"] == 0.0

    Trainer(tiny_train_config(tmp_path / "run", tiny_vq, steps=2), progress=False).run()
    ckpt = str(tmp_path / "run" / "checkpoints" / "final")
    assert vqa_lookup.main([ckpt, "-n", "3", "--out", str(tmp_path / "look")]) == 0
    report = json.loads((tmp_path / "look" / "vqa_lookup_test.json").read_text())
    assert report["n_scenes"] == 3 and "exists_yes" in report["groups"]
    assert (tmp_path / "look" / "vqa_lookup_test.md").is_file()
    with_aids = vqa_lookup.lookup_questions(examples, "test", np.random.default_rng(0), aids=True)
    aid = [q for q in with_aids if q["group"].startswith("aid_")]
    assert {q["group"] for q in aid} == {"aid_exists_color", "aid_exists_shape", "aid_where_color", "aid_where_shape"}
    assert all(v["acc"] == 1.0 for v in vqa_lookup.score(aid, [q["q"].answer for q in aid], examples).values())


def test_a_seed_matches_by_the_precision_it_trained_in_not_the_setting(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import benchkit
    finally:
        sys.path.remove(str(BENCHMARKS))
    from uniar.errors import UserError

    def plan(setting, precision, seed):
        return {"config": {"optim": {"bf16": setting}, "seed": seed}, "sampling": {"seed": seed}, "precision": precision}

    store = benchkit.RunStore(tmp_path, "order")
    store.save({"arm": "raster", "seed": 0, "identity": plan("auto", "fp32", 0)})  # auto on an AVX2 CPU
    assert not store.done("raster", 1, plan(False, "fp32", 1))  # forced fp32 elsewhere: the same run, seed 1
    with pytest.raises(UserError, match="optim.bf16: 'fp32' -> 'bf16'"):
        store.done("raster", 1, plan("auto", "bf16", 1))  # auto on an AMX CPU trains in bf16: another run
    assert store.done("raster", 0, plan(False, "fp32", 0))


def test_task_gradients_reads_a_checkpoint_and_reports_every_task(tmp_path, tiny_vq, monkeypatch):
    """benchmarks/task_gradients.py on a tiny UGen run: every task of the stage, the lookup questions
    apart, and a mixture whose cosine with itself is 1."""
    from helpers import tiny_train_config
    from uniar.train.loop import Trainer

    torch.set_num_threads(1)
    cfg = tiny_train_config(tmp_path / "run", tiny_vq, steps=4)
    cfg.model.loss_norm = "sequence"
    cfg.progressive_vocab.enabled = False
    Trainer(cfg, progress=False).run()
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import task_gradients
    finally:
        sys.path.remove(str(BENCHMARKS))
    out = tmp_path / "tg"
    monkeypatch.setattr(sys, "argv", ["task_gradients.py", str(tmp_path / "run" / "checkpoints" / "final"),
                                      "--rows", "4", "--by-answer", "--out", str(out)])
    assert task_gradients.main() == 0
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["stage"] == "B" and {"t2i", "caption", "vqa (exists, where)", "vqa (color, shape, count)", "edit",
                                    "interleaved", "text", "vqa where", "mixture"} <= set(rec["tasks"])
    assert {"vqa exists, answer yes", "vqa exists, answer no"} & set(rec["tasks"])  # 12 draws, one answer at least twice
    assert rec["tasks"]["mixture"]["cos_total"] == pytest.approx(1.0, abs=1e-5)
    assert all(r["grad"] > 0 and r["adam"] > 0 for r in rec["tasks"].values())
    assert "Cosines between" in out.with_suffix(".md").read_text()


def test_image_probe_maps_tokens_to_cells_and_probes_every_layer(tmp_path, tiny_vq):
    from helpers import tiny_train_config
    from uniar.train.loop import Trainer

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import image_probe
    finally:
        sys.path.remove(str(BENCHMARKS))
    cells, last = image_probe.token_cells(6)  # 48 px: each cell is 2x2 tokens
    assert cells[[0, 1, 6, 7, 2, 35]].tolist() == [0, 0, 0, 0, 1, 8]
    assert last.sum() == 9 and last[7] and not last[6]
    cells8, _ = image_probe.token_cells(8)  # 64 px: cells straddle tokens; a token goes where its centre is
    assert cells8[[0, 2, 3, 4, 63]].tolist() == [0, 0, 1, 1, 8] and sorted(set(cells8.tolist())) == list(range(9))

    torch.set_num_threads(1)
    Trainer(tiny_train_config(tmp_path / "run", tiny_vq, steps=2), progress=False).run()
    out = tmp_path / "probe"
    assert image_probe.main([str(tmp_path / "run" / "checkpoints" / "final"), "--scenes", "12", "--out", str(out)]) == 0
    rec = json.loads(out.with_suffix(".json").read_text())
    assert [r["layer"] for r in rec["layers"]] == list(range(len(rec["layers"]))) and len(rec["layers"]) >= 2
    assert all(0.0 <= r[k] <= 1.0 for r in rec["layers"] for k in ("shape", "color", "shape_last", "color_last"))
