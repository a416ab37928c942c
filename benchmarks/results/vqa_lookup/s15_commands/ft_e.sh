#!/bin/bash
# (e) the s14 und_pos_shared final, 500 steps at lr 3e-4: VQA rows of every type but lookup-heavy
# (exists/where 1, color/shape .1, count .05) + 10% captions; lookup learned without losing the rest?
set -e
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
cfg=runs/s15/uf_shared_config.yaml; init=runs/s14/uf_shared/headline_seed0/checkpoints/final
out=runs/s15/ft_uf_e
.venv/bin/uniar train --config $cfg --no-eval --no-progress init_from=$init out_dir=$out steps=500 optim.lr=3e-4 optim.warmup_steps=50 \
  "stages=[{name: F, fraction: 1.0, weights: {vqa: 0.9, caption: 0.1}, vqa_type_weights: {exists: 1, where: 1, color: 0.1, shape: 0.1, count: 0.05}}]" data.exists_near_miss=0.7 checkpoint_every=500 > $out.log 2>&1
.venv/bin/python benchmarks/vqa_lookup.py $out/checkpoints/final --out $out/lookup -n 200 --aids >> $out.log 2>&1
.venv/bin/uniar eval $out/checkpoints/final --split test -n 100 --cfg 2 --temperature 1 --seed 0 --tasks vqa,caption,t2i,edit --out $out/eval_s15 >> $out.log 2>&1
