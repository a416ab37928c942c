# s20 e2: between s19 lookup_stage (L .18 lookup-only: VQA .97, edit .275) and s20 e1 (L .15 with edit .2: VQA .865, edit .355):
# B2 .27, L .18 {vqa .8, caption .05, edit .15}, M .25 {t2i .2, caption .1, vqa .25, edit .4, text .05};
# edit rows in L and M weighted towards the weak types (remove 1.5, add 0.5); --minutes 29.5
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
EW='edit_type_weights: {recolor: 1, move: 1, remove: 1.5, add: 0.5}'
ST="stages=[{name: A, fraction: 0.07, weights: {text: 1.0}}, {name: B1, fraction: 0.23, weights: {t2i: 0.6, edit: 0.35, text: 0.05}}, {name: B2, fraction: 0.27, weights: {t2i: 0.3, caption: 0.2, vqa: 0.2, edit: 0.1, interleaved: 0.05, text: 0.15}, vqa_type_weights: {color: 1.0, shape: 1.5, count: 0.5, exists: 0.5, where: 0.5}}, {name: L, fraction: 0.18, weights: {vqa: 0.8, caption: 0.05, edit: 0.15}, vqa_type_weights: {exists: 1, where: 1}, $EW, restart_lr: 3.0e-4, reset_moments: true}, {name: M, fraction: 0.25, weights: {t2i: 0.2, caption: 0.1, vqa: 0.25, edit: 0.4, text: 0.05}, vqa_type_weights: {color: 0.25, shape: 0.25, count: 0.1, exists: 0.8, where: 0.8}, $EW}]"
.venv/bin/python benchmarks/unifluid_tiny.py --minutes 29.5 --out runs/s20/uf_e2 --results runs/s20/uf_e2_results --no-progress "$ST" data.exists_near_miss=0.7
