# model.prompt_first on the ugen-tiny preset, 3000 steps, seeds 0 and 1 side by side (1 thread each),
# the same conditions as runs/s17/vinit's random_seed{0,1} baselines
cd /work/main
while pgrep -f "runs/s17/vinit.sh" > /dev/null; do sleep 10; done
export HF_HUB_OFFLINE=1 UNIAR_THREADS=1
for seed in 0 1; do
  .venv/bin/uniar train --config ugen-tiny --no-progress out_dir=runs/s17/pfirst/seed$seed seed=$seed \
    model.prompt_first=true eval.every=1000 > runs/s17/pfirst/seed$seed.log 2>&1 &
done
wait
