cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
ST='stages=[{name: A, fraction: 0.0992, weights: {text: 1.0}}, {name: B, fraction: 0.6127, weights: {t2i: 0.35, caption: 0.15, vqa: 0.15, edit: 0.15, interleaved: 0.05, text: 0.15}}, {name: L, fraction: 0.1186, weights: {vqa: 0.85, caption: 0.15}, vqa_type_weights: {exists: 1, where: 1}, restart_lr: 3.0e-4, reset_moments: true}, {name: M, fraction: 0.1695, weights: {t2i: 0.15, caption: 0.2, vqa: 0.3, edit: 0.25, text: 0.1}, vqa_type_weights: {color: 0.25, shape: 0.25, count: 0.1, exists: 0.8, where: 0.8}}]'
.venv/bin/python benchmarks/ugen_tiny.py --steps 5900 --image-top-k 1 --out runs/s14/ugen_v4 --results runs/s14/ugen_v4_results --no-text-baseline "$ST" model.image_pos_embed=true data.exists_near_miss=0.7 eval.every=1000
