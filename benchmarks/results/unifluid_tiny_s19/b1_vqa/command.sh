# unifluid-tiny s19, b1_vqa: VQA rows (every question type alike) from the start of B1, so the
# lookup questions train over ~4700 steps as in UGen's stage B (where the lookup appeared 3300-4300
# steps in), not only over B2's ~2600. A shortened to 5%; B1's VQA share taken from t2i (.6 -> .45).
# The s18 headline's 4965 steps (27.4 min on s18's machine; today's runs ~25% slower per step), seed 0, 2 threads, alone.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
ST='stages=[{name: A, fraction: 0.05, weights: {text: 1.0}}, {name: B1, fraction: 0.35, weights: {t2i: 0.45, edit: 0.35, vqa: 0.15, text: 0.05}}, {name: B2, fraction: 0.6, weights: {t2i: 0.3, caption: 0.2, vqa: 0.2, edit: 0.1, interleaved: 0.05, text: 0.15}, vqa_type_weights: {color: 1.0, shape: 1.5, count: 0.5, exists: 0.5, where: 0.5}}]'
.venv/bin/python benchmarks/unifluid_tiny.py --steps 4965 --out runs/s19/uf_b1vqa --results runs/s19/uf_b1vqa_results --no-progress "$ST"
