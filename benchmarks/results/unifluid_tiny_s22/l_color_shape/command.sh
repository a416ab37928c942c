# s22 unifluid-tiny: the preset with color and shape questions kept in the lookup stage L
# (L's vqa_type_weights {exists 1, where 1} -> {exists 1, where 1, color 0.2, shape 0.3}); the preset as is at
# 4400 steps (runs/s22/uf_preset) lost colour and shape questions (0.585 / 0.475) while captions held (0.885).
# --steps 4400, seed 1, 2 threads, alone.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
ST='stages=[{name: A, fraction: 0.07, weights: {text: 1.0}}, {name: B1, fraction: 0.23, weights: {t2i: 0.6, edit: 0.35, text: 0.05}}, {name: B2, fraction: 0.30, weights: {t2i: 0.3, caption: 0.2, vqa: 0.2, edit: 0.1, interleaved: 0.05, text: 0.15}, vqa_type_weights: {color: 1.0, shape: 1.5, count: 0.5, exists: 0.5, where: 0.5}}, {name: L, fraction: 0.18, weights: {vqa: 0.85, caption: 0.15}, vqa_type_weights: {exists: 1, where: 1, color: 0.2, shape: 0.3}, restart_lr: 3.0e-4, reset_moments: true}, {name: M, fraction: 0.22, weights: {t2i: 0.15, caption: 0.15, vqa: 0.25, edit: 0.4, text: 0.05}, vqa_type_weights: {color: 0.25, shape: 0.6, count: 0.1, exists: 0.8, where: 0.8}}]'
.venv/bin/python benchmarks/unifluid_tiny.py --steps 4400 --out runs/s22/uf_lcs --results runs/s22/uf_lcs_results --seeds 1 --no-progress "$ST"
