"""Progressive vocabulary learning: the schedule and the three treatments of inactive ids."""

import pytest
import torch

from uniar.errors import UserError
from uniar.train.progressive_vocab import ProgressiveVocab, ProgressiveVocabConfig

OFF = 100  # visual offset
NV = 10


def pv(**kw):
    return ProgressiveVocab(ProgressiveVocabConfig(**kw), NV, stage_b_steps=100)


def test_one_new_id_every_k_steps_without_replacement():
    p = pv(k=3)
    seen = []
    for step in range(0, 3 * NV + 5):
        p.set_step(step)
        assert p.n_active == min(NV, step // 3)
        new = set(torch.nonzero(p.active).flatten().tolist()) - set(seen)
        assert len(new) <= 1
        seen += sorted(new)
    assert sorted(seen) == list(range(NV))  # every id exactly once


def test_full_at_fraction_derives_k():
    p = pv(full_at=0.5)
    p.set_step(50)
    assert p.all_active
    p.set_step(40)
    assert not p.all_active


def test_vanilla_is_all_active():
    p = pv(enabled=False)
    p.set_step(0)
    assert p.all_active
    ids = torch.tensor([[1, OFF + 3, OFF + 7]])
    assert torch.equal(p.apply_inputs(ids, OFF, mask_id=5), ids)
    assert p.logit_bias(OFF + NV, OFF) is None


def test_three_treatments():
    p = pv(k=1)
    p.set_step(3)
    active = torch.nonzero(p.active).flatten().tolist()
    inactive = [c for c in range(NV) if c not in active]
    ids = torch.tensor([[7, OFF + active[0], OFF + inactive[0]]])
    targets = torch.ones_like(ids, dtype=torch.bool)
    assert p.apply_inputs(ids, OFF, mask_id=5).tolist() == [[7, OFF + active[0], 5]]
    assert p.apply_targets(ids, targets, OFF).tolist() == [[True, True, False]]
    bias = p.logit_bias(OFF + NV, OFF)
    assert torch.isinf(bias[OFF + inactive[0]]) and bias[OFF + active[0]] == 0 and bias[7] == 0


def test_switches_turn_treatments_off():
    p = pv(k=1, mask_inputs=False, mask_targets=False, mask_logits=False)
    p.set_step(1)
    ids = torch.tensor([[OFF + c for c in range(NV)]])
    assert torch.equal(p.apply_inputs(ids, OFF, 5), ids)
    assert p.apply_targets(ids, torch.ones_like(ids, dtype=torch.bool), OFF).all()
    assert p.logit_bias(OFF + NV, OFF) is None


def test_logit_masking_without_target_masking_is_rejected():
    with pytest.raises(UserError, match="mask_targets"):
        pv(mask_logits=True, mask_targets=False)


def test_state_round_trip_and_mismatch():
    p = pv(k=2, seed=3)
    p.set_step(9)
    q = pv(k=2, seed=3)
    q.load_state_dict(p.state_dict())
    assert torch.equal(p.active, q.active)
    with pytest.raises(UserError, match="schedule"):
        pv(k=2, seed=4).load_state_dict(p.state_dict())
