# unifluid-tiny s18, prompt first + b2_short_targets: session 16's b2_short_targets (B2 moved towards
# VQA and edit, lookup rows ~13% of B2's rows) on today's preset, where the question comes before
# the image (model.prompt_first, now the default). The same 4775 steps as s16's image-first arm,
# seed 0, 2 threads, alone on the machine.
cd /work/main

export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
ST='stages=[{name: A, fraction: 0.1, weights: {text: 1.0}}, {name: B1, fraction: 0.35, weights: {t2i: 0.6, edit: 0.35, text: 0.05}}, {name: B2, fraction: 0.55, weights: {t2i: 0.25, caption: 0.15, vqa: 0.3, edit: 0.2, interleaved: 0.05, text: 0.05}, vqa_type_weights: {color: 1.0, shape: 1.0, count: 0.25, exists: 1.0, where: 1.0}}]'
.venv/bin/python benchmarks/unifluid_tiny.py --steps 4775 --out runs/s18/uf_b2st --results runs/s18/uf_b2st_results --no-progress "$ST"
