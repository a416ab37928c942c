# unifluid-tiny s15: the preset as it now is (B2's VQA type weights), sized to ~27 train-min on this
# session's slower machine (A ~0.31, B1 ~0.55, B2 ~0.63 s/step): 2800 steps, seed 0.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
.venv/bin/python benchmarks/unifluid_tiny.py --steps 2800 --out runs/s15/uf_preset30 --results runs/s15/uf_preset30_results --no-progress
