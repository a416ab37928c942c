#!/bin/bash
# Fine-tune lookup probe: from a trained mixed checkpoint (perceives colours and shapes), 500 steps
# of VQA rows at lr 3e-4; (a) conjunctive exists/where only, (b) the same plus the one-attribute aids.
# usage: ft_probe.sh NAME CONFIG INIT
set -e
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
name=$1; cfg=$2; init=$3
for arm in a b; do
  if [ $arm = a ]; then W="{exists: 1, where: 1}"; else W="{exists: 1, where: 1, exists_color: 1, exists_shape: 1, where_color: 1, where_shape: 1}"; fi
  out=runs/s15/ft_${name}_$arm
  .venv/bin/uniar train --config $cfg --no-eval --no-progress init_from=$init out_dir=$out steps=500 optim.lr=3e-4 optim.warmup_steps=50 \
    "stages=[{name: F, fraction: 1.0, weights: {vqa: 1.0}}]" progressive_vocab.enabled=false "data.vqa_type_weights=$W" checkpoint_every=250 > $out.log 2>&1
  .venv/bin/python benchmarks/vqa_lookup.py $out/checkpoints/final --out $out/lookup -n 200 --aids >> $out.log 2>&1
done
