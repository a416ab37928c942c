"""Typed configs: YAML + key=value overrides, checked against the dataclass types."""

import pytest

from uniar.config import apply_overrides, load_config
from uniar.errors import UserError
from uniar.train.config import TrainConfig


def test_overrides_parse_and_check_types():
    cfg = apply_overrides(TrainConfig(), ["optim.lr=1e-3", "steps=7", "model.backbone.n_layers=2",
                                          "data.order=random", "optim.bf16=false"])
    assert cfg.optim.lr == 1e-3 and cfg.steps == 7 and cfg.model.backbone.n_layers == 2
    assert cfg.data.order == "random" and cfg.optim.bf16 is False


def test_unknown_keys_and_bad_types_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="unknown key"):
        apply_overrides(TrainConfig(), ["optim.learning_rate=1"])
    with pytest.raises(UserError, match="expected an integer"):
        apply_overrides(TrainConfig(), ["steps=many"])
    with pytest.raises(UserError, match="key=value"):
        apply_overrides(TrainConfig(), ["steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lrr: 1}\n")
    with pytest.raises(UserError, match="lrr"):
        load_config(TrainConfig, bad)


def test_vqa_per_row_is_checked():
    for bad, match in ((["data.vqa_per_row=0"], "1..5"), (["data.vqa_per_row=6"], "1..5"),
                       (["data.vqa_per_row=3", "model.prompt_first=true"], "prompt_first")):
        with pytest.raises(UserError, match=match):
            apply_overrides(TrainConfig(), bad).validate()
    apply_overrides(TrainConfig(), ["data.vqa_per_row=5"]).validate()


def test_softmax_switch_is_ugen_only():
    from uniar.models.build import build_model
    from uniar.train.config import ModelConfig

    with pytest.raises(UserError, match="UGen only"):
        build_model(ModelConfig(family="unifluid", softmax="per_modality"), None, None)
    with pytest.raises(UserError, match="UGen's switch"):
        build_model(ModelConfig(family="unifluid", image_pos_embed=True), None, None)


def test_vqa_type_weights_are_checked():
    for bad in (["data.vqa_type_weights={colour: 1}"], ["data.vqa_type_weights={exists: -1}"],
                ["data.vqa_type_weights={exists: 0}"]):
        with pytest.raises(UserError, match="vqa_type_weights"):
            apply_overrides(TrainConfig(), bad).validate()
    apply_overrides(TrainConfig(), ["data.vqa_type_weights={exists: 1, where_color: 0.5}"]).validate()  # an aid type


def test_edit_type_weights_are_checked():
    for bad in (["data.edit_type_weights={delete: 1}"], ["data.edit_type_weights={remove: -1}"],
                ["data.edit_type_weights={remove: 0}"],
                ["stages=[{name: B, fraction: 1, weights: {edit: 1}, edit_type_weights: {erase: 1}}]"]):
        with pytest.raises(UserError, match="edit_type_weights"):
            apply_overrides(TrainConfig(), bad).validate()
    cfg = apply_overrides(TrainConfig(), ["stages=[{name: B, fraction: 1, weights: {edit: 1}, "
                                          "edit_type_weights: {remove: 2, move: 1}}]"])
    cfg.validate()
    assert cfg.stages[0].edit_type_weights == {"remove": 2, "move": 1}


def test_a_stage_s_own_vqa_type_weights_load_and_are_checked(tmp_path):
    from uniar.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("stages:\n  - {name: A, fraction: 0.5, weights: {vqa: 1}}\n"
                    "  - {name: B2, fraction: 0.5, weights: {vqa: 1}, vqa_type_weights: {exists: 2, where: 1}}\n")
    cfg = load_config(TrainConfig, str(path), [])
    cfg.validate()
    assert cfg.stages[0].vqa_type_weights is None and cfg.stages[1].vqa_type_weights == {"exists": 2, "where": 1}
    path.write_text("stages:\n  - {name: B2, fraction: 1, weights: {vqa: 1}, vqa_type_weights: {colour: 1}}\n")
    with pytest.raises(UserError, match="stage B2 vqa_type_weights"):
        load_config(TrainConfig, str(path), []).validate()


def test_bf16_auto_resolves_by_the_device(monkeypatch):
    import uniar.utils.precision as precision

    cfg = apply_overrides(TrainConfig(), ["optim.bf16=auto"])
    assert cfg.optim.bf16 == "auto"
    with pytest.raises(UserError, match="bf16"):
        apply_overrides(TrainConfig(), ["optim.bf16=sometimes"])
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert precision.use_bf16("auto", "cpu") is False  # an AVX2-only CPU: fp32
    assert precision.use_bf16(True, "cpu") is True  # an explicit setting is obeyed
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert precision.use_bf16("auto", "cpu") is True
    assert precision.use_bf16(False, "cpu") is False
