cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
.venv/bin/python benchmarks/ugen_tiny.py --steps 4500 --image-top-k 1 --out runs/s14/ugen_turn5 --results runs/s14/ugen_turn5_results --no-text-baseline model.loss_norm=turn data.vqa_per_row=5 eval.every=1000
