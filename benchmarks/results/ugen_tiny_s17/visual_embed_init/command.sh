# model.visual_embed_init A/B: ugen-tiny preset, 3000 steps (its default schedule), two runs at a time, 1 thread each
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=1
for seed in 0 1; do
  for init in random codebook; do
    .venv/bin/uniar train --config ugen-tiny --no-progress out_dir=runs/s17/vinit/${init}_seed$seed seed=$seed \
      model.visual_embed_init=$init eval.every=1000 > runs/s17/vinit/${init}_seed$seed.log 2>&1 &
  done
  wait
done
