# s23 perplexity probe: move stage A's text rows into stage B (3000 steps, seed 0, 1 thread each, two
# arms side by side). Text and image rows stay the same in total as the preset (A 0.1, B text 0.15):
#  shortA:      A 0.03; B text weight 0.2277 (text 21.1% of B's rows)
#  shortA_late: A 0.03; B1 (0.67) text 0.15; B2 (last 0.30) text weight 0.4537 (34.8% of rows)
# Compared with base_command.sh (the preset, same steps, seed and machine; ratio 1.265) in ../README.md.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=1
A='{name: A, fraction: 0.03, weights: {text: 1.0}}'
I='t2i: 0.35, caption: 0.15, vqa: 0.15, edit: 0.15, interleaved: 0.05'
run() {  # name, stages
  .venv/bin/python benchmarks/ugen_tiny.py --steps 3000 --image-top-k 1 --out runs/s23/probe/$1 \
    --results runs/s23/probe/$1/results "stages=$2" > runs/s23/probe/$1.log 2>&1
}
mkdir -p runs/s23/probe
run shortA "[$A, {name: B, fraction: 0.97, weights: {$I, text: 0.2277}}]" &
run shortA_late "[$A, {name: B1, fraction: 0.67, weights: {$I, text: 0.15}}, {name: B2, fraction: 0.30, weights: {$I, text: 0.4537}}]" &
wait
