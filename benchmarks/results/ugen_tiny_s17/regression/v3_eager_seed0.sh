cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
ST='stages=[{name: A, fraction: 0.1083, weights: {text: 1.0}}, {name: B, fraction: 0.5769, weights: {t2i: 0.35, caption: 0.15, vqa: 0.15, edit: 0.15, interleaved: 0.05, text: 0.15}}, {name: L, fraction: 0.1296, weights: {vqa: 1.0}, vqa_type_weights: {exists: 1, where: 1}, restart_lr: 3.0e-4, reset_moments: true}, {name: M, fraction: 0.1852, weights: {t2i: 0.15, caption: 0.2, vqa: 0.3, edit: 0.25, text: 0.1}, vqa_type_weights: {color: 0.25, shape: 0.25, count: 0.1, exists: 0.8, where: 0.8}}]'
.venv/bin/python benchmarks/ugen_tiny.py --steps 5400 --image-top-k 1 --out runs/s17/v3_eager --results runs/s17/v3_eager_results "$ST" data.exists_near_miss=0.7 eval.every=1000 optim.compile=false
