# s22 ugen near-miss + edit types: the ugen-tiny headline recipe (--image-top-k 1, 6700 steps, seed 0) with
# (a) data.exists_near_miss 0.7 (UniFluid's fix for `exists`: a `no` question shares a colour or shape
#     with an object in the scene 70% of the time) and exists questions weighted 1.5 in stage B;
# (b) stage B's edit rows weighted towards the weak edit types (remove 1.5, move 1.25, recolor 1, add 0.5).
# 2 threads, alone.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
ST='stages=[{name: A, fraction: 0.1, weights: {text: 1.0}}, {name: B, fraction: 0.9, weights: {t2i: 0.35, caption: 0.15, vqa: 0.15, edit: 0.15, interleaved: 0.05, text: 0.15}, vqa_type_weights: {color: 1, shape: 1, count: 1, exists: 1.5, where: 1}, edit_type_weights: {recolor: 1, move: 1.25, remove: 1.5, add: 0.5}}]'
.venv/bin/python benchmarks/ugen_tiny.py --steps 6700 --image-top-k 1 --out runs/s22/ugen_nm --results runs/s22/ugen_nm_results data.exists_near_miss=0.7 "$ST"
