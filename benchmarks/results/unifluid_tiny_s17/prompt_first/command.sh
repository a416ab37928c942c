# model.prompt_first on the unifluid-tiny preset: 3000 steps (its default schedule), seed 0, image-first
# and prompt-first side by side, 1 thread each; starts when the UGen headline run is done
cd /work/main
while pgrep -f "runs/s17/headline/command.sh" > /dev/null; do sleep 10; done
export HF_HUB_OFFLINE=1 UNIAR_THREADS=1
for pf in false true; do
  .venv/bin/uniar train --config unifluid-tiny --no-progress out_dir=runs/s17/uf_pfirst/pf_$pf seed=0 \
    model.prompt_first=$pf eval.every=1000 > runs/s17/uf_pfirst/pf_$pf.log 2>&1 &
done
wait
