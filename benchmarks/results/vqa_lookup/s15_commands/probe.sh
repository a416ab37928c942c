#!/bin/bash
# UGen lookup probe: from scratch, VQA rows only, 1000 steps; (a) conjunctive exists/where only,
# (b) the same plus the one-attribute aid questions.
set -e
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
for arm in a b; do
  if [ $arm = a ]; then W="{exists: 1, where: 1}"; else W="{exists: 1, where: 1, exists_color: 1, exists_shape: 1, where_color: 1, where_shape: 1}"; fi
  .venv/bin/uniar train --config runs/s15/probe.yaml --no-eval --no-progress out_dir=runs/s15/probe_$arm "data.vqa_type_weights=$W" > runs/s15/probe_$arm.log 2>&1
  .venv/bin/python benchmarks/vqa_lookup.py runs/s15/probe_$arm/checkpoints/final --out runs/s15/probe_$arm/lookup -n 200 >> runs/s15/probe_$arm.log 2>&1
done
