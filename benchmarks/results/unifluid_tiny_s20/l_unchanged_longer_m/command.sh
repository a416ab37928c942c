# s20 e3: s19 lookup_stage's L unchanged (.18, exists/where questions .85, captions .15: edit rows in L cost
# the lookup in e1 and e2) and a longer M with edit weighted up: B2 .27 (edit .15), M .25 {t2i .15,
# caption .1, vqa .25, edit .45, text .05}; --minutes 29.5, seed 0, 2 threads, alone
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
ST='stages=[{name: A, fraction: 0.07, weights: {text: 1.0}}, {name: B1, fraction: 0.23, weights: {t2i: 0.6, edit: 0.35, text: 0.05}}, {name: B2, fraction: 0.27, weights: {t2i: 0.25, caption: 0.2, vqa: 0.2, edit: 0.15, interleaved: 0.05, text: 0.15}, vqa_type_weights: {color: 1.0, shape: 1.5, count: 0.5, exists: 0.5, where: 0.5}}, {name: L, fraction: 0.18, weights: {vqa: 0.85, caption: 0.15}, vqa_type_weights: {exists: 1, where: 1}, restart_lr: 3.0e-4, reset_moments: true}, {name: M, fraction: 0.25, weights: {t2i: 0.15, caption: 0.1, vqa: 0.25, edit: 0.45, text: 0.05}, vqa_type_weights: {color: 0.25, shape: 0.25, count: 0.1, exists: 0.8, where: 0.8}}]'
.venv/bin/python benchmarks/unifluid_tiny.py --minutes 29.5 --out runs/s20/uf_e3 --results runs/s20/uf_e3_results --no-progress "$ST" data.exists_near_miss=0.7
