#!/bin/bash
# UGen lookup fine-tune: the s14 turn5 final (loss_norm turn, vqa_per_row 5), 500 steps at lr 3e-4 on
# exists/where VQA rows (one question per row, loss_norm sequence as the preset), then vqa_lookup --aids.
set -e
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
out=runs/s15/ft_ugen_a
.venv/bin/uniar train --config runs/s15/ugen_turn5_config.yaml --no-eval --no-progress init_from=runs/s14/ugen_turn5/unified/checkpoints/final out_dir=$out steps=500 optim.lr=3e-4 optim.warmup_steps=50 \
  "stages=[{name: F, fraction: 1.0, weights: {vqa: 1.0}}]" progressive_vocab.enabled=false "data.vqa_type_weights={exists: 1, where: 1}" data.vqa_per_row=1 model.loss_norm=sequence checkpoint_every=500 > $out.log 2>&1
.venv/bin/python benchmarks/vqa_lookup.py $out/checkpoints/final --out $out/lookup -n 200 --aids >> $out.log 2>&1
