#!/bin/bash
# UniFluid: does a last lookup stage cost drawing? The s14 und_pos_shared final, 500 steps at lr 3e-4:
# (c) lookup rows + 15% captions (as session 13's L); (d) lookup rows .6, caption .1, t2i .15, edit .15.
# Then each (and the base) scored on test: t2i, edit, vqa (n=100) and vqa_lookup.
set -e
export HF_HUB_OFFLINE=1 UNIAR_THREADS=${UNIAR_THREADS:-2}
cfg=runs/s15/uf_shared_config.yaml; init=runs/s14/uf_shared/headline_seed0/checkpoints/final
W="{exists: 1, where: 1}"
.venv/bin/python benchmarks/vqa_lookup.py $init --out runs/s15/uf_shared_base_lookup -n 200 --aids > runs/s15/uf_shared_base_lookup.log 2>&1
for arm in c d; do
  if [ $arm = c ]; then T="{vqa: 0.85, caption: 0.15}"; else T="{vqa: 0.6, caption: 0.1, t2i: 0.15, edit: 0.15}"; fi
  out=runs/s15/ft_uf_$arm
  .venv/bin/uniar train --config $cfg --no-eval --no-progress init_from=$init out_dir=$out steps=500 optim.lr=3e-4 optim.warmup_steps=50 \
    "stages=[{name: F, fraction: 1.0, weights: $T, vqa_type_weights: $W}]" checkpoint_every=500 > $out.log 2>&1
  .venv/bin/python benchmarks/vqa_lookup.py $out/checkpoints/final --out $out/lookup -n 200 >> $out.log 2>&1
done
for d in runs/s14/uf_shared/headline_seed0 runs/s15/ft_uf_c runs/s15/ft_uf_d; do
  .venv/bin/uniar eval $d/checkpoints/final --split test -n 100 --cfg 2 --temperature 1 --seed 0 --tasks t2i,edit,vqa,caption --out $d/eval_s15 >> runs/s15/ft_mix_eval.log 2>&1
done
