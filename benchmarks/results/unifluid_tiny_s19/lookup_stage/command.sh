# unifluid-tiny s19, lookup_stage: session 13's v1 (the one in-run recipe that has taught UniFluid
# the lookup: exists 0.805, where 0.833, but t2i 0.59 and edit 0.145 at image first) on today's
# preset, where prompt_first left edit (0.385) and t2i (0.79) room to pay: A, B1 and B2 as the
# preset (shorter), then L (exists/where questions .85, captions .15; the schedule restarted at
# 3e-4 with fresh AdamW moments) and a mixed M with edit weighted up. The s18 headline's 4965 steps,
# seed 0, 2 threads, alone.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
ST='stages=[{name: A, fraction: 0.07, weights: {text: 1.0}}, {name: B1, fraction: 0.23, weights: {t2i: 0.6, edit: 0.35, text: 0.05}}, {name: B2, fraction: 0.30, weights: {t2i: 0.3, caption: 0.2, vqa: 0.2, edit: 0.1, interleaved: 0.05, text: 0.15}, vqa_type_weights: {color: 1.0, shape: 1.5, count: 0.5, exists: 0.5, where: 0.5}}, {name: L, fraction: 0.18, weights: {vqa: 0.85, caption: 0.15}, vqa_type_weights: {exists: 1, where: 1}, restart_lr: 3.0e-4, reset_moments: true}, {name: M, fraction: 0.22, weights: {t2i: 0.25, caption: 0.15, vqa: 0.25, edit: 0.3, text: 0.05}, vqa_type_weights: {color: 0.25, shape: 0.25, count: 0.1, exists: 0.8, where: 0.8}}]'
.venv/bin/python benchmarks/unifluid_tiny.py --steps 4965 --out runs/s19/uf_lm --results runs/s19/uf_lm_results --no-progress "$ST" data.exists_near_miss=0.7
