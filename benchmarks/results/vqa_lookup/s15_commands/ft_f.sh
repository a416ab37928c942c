#!/bin/bash
# (f) as ft_probe.sh arm a (UniFluid s14 und_pos_shared final, 500 steps at lr 3e-4, exists/where rows)
# with every `no` exists question a near miss (data.exists_near_miss=1.0): does the colour-only check
# become a colour-and-shape check?
set -e
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
out=runs/s15/ft_uf_f
.venv/bin/uniar train --config runs/s15/uf_shared_config.yaml --no-eval --no-progress init_from=runs/s14/uf_shared/headline_seed0/checkpoints/final out_dir=$out steps=500 optim.lr=3e-4 optim.warmup_steps=50 \
  "stages=[{name: F, fraction: 1.0, weights: {vqa: 1.0}}]" "data.vqa_type_weights={exists: 1, where: 1}" data.exists_near_miss=1.0 checkpoint_every=500 > $out.log 2>&1
.venv/bin/python benchmarks/vqa_lookup.py $out/checkpoints/final --out $out/lookup -n 200 --aids >> $out.log 2>&1
