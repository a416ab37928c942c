# ugen-tiny stage-B loss_weights probe: 3000 steps (the preset's), seed 0, two arms side by side
# (1 thread each); the base arm is session 17's prompt_first seed 0 (same preset, same conditions), reused.
cd /work/main
while pgrep -f "benchmarks/unifluid_tiny.py" > /dev/null; do sleep 10; done
export HF_HUB_OFFLINE=1 UNIAR_THREADS=1
A='{name: A, fraction: 0.1, weights: {text: 1.0}}'
W='{t2i: 0.35, caption: 0.15, vqa: 0.15, edit: 0.15, interleaved: 0.05, text: 0.15}'
run() {  # name, loss_weights
  .venv/bin/python benchmarks/ugen_tiny.py --steps 3000 --image-top-k 1 --out runs/s18/lw/$1 \
    --results runs/s18/lw/$1/results "stages=[$A, {name: B, fraction: 0.9, weights: $W, loss_weights: $2}]" \
    > runs/s18/lw/$1.log 2>&1
}
run text3 '{text: 3.0}' &
( run text3_edit2 '{text: 3.0, edit: 2.0}'
  .venv/bin/python benchmarks/ugen_tiny.py --steps 3000 --image-top-k 1 --out runs/s18/lw/base --reuse \
    --results runs/s18/lw/base/results > runs/s18/lw/base.log 2>&1 ) &
wait
