# ugen-tiny s15 v4: session 12's v3 schedule (A 585, B 3115, L 700 restarted, M 1000; 5400 steps)
# with L keeping 15% captions (session 13's UniFluid probe kept captioning that way) and a learned
# embedding of each image token's index (model.image_pos_embed), which `where` needs to read a found
# object's position. Sized for ~0.36 s/step in B, measured at the session's start.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
ST='stages=[{name: A, fraction: 0.10833, weights: {text: 1.0}}, {name: B, fraction: 0.57685, weights: {t2i: 0.35, caption: 0.15, vqa: 0.15, edit: 0.15, interleaved: 0.05, text: 0.15}}, {name: L, fraction: 0.12963, weights: {vqa: 0.85, caption: 0.15}, vqa_type_weights: {exists: 1, where: 1}, restart_lr: 3.0e-4, reset_moments: true}, {name: M, fraction: 0.18519, weights: {t2i: 0.15, caption: 0.2, vqa: 0.3, edit: 0.25, text: 0.1}, vqa_type_weights: {color: 0.25, shape: 0.25, count: 0.1, exists: 0.8, where: 0.8}}]'
.venv/bin/python benchmarks/ugen_tiny.py --steps 5400 --image-top-k 1 --out runs/s15/ugen_v4 --results runs/s15/ugen_v4_results --no-text-baseline "$ST" model.image_pos_embed=true data.exists_near_miss=0.7 eval.every=1000
