# unifluid-tiny s15: the preset with stage B2's VQA rows weighted to the question types it reads
# worst at 30 min (session 12: shape 0.625), as session 14's v1 did inside a longer schedule
# (color 0.98 / shape 0.975 there). Only that changes; 3897 steps, seed 0, as session 12's preset
# run and session 14's und_pos_shared run, compared by steps (this machine runs B2 at ~0.6 s/step).
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
ST='stages=[{name: A, fraction: 0.1, weights: {text: 1.0}}, {name: B1, fraction: 0.35, weights: {t2i: 0.6, edit: 0.35, text: 0.05}}, {name: B2, fraction: 0.55, weights: {t2i: 0.3, caption: 0.2, vqa: 0.2, edit: 0.1, interleaved: 0.05, text: 0.15}, vqa_type_weights: {color: 1.0, shape: 1.5, count: 0.5, exists: 0.5, where: 0.5}}]'
.venv/bin/python benchmarks/unifluid_tiny.py --steps 3897 --out runs/s15/uf_b2w --results runs/s15/uf_b2w_results --no-progress "$ST"
