# ugen-tiny s18: the session-17 headline recipe (ugen_tiny_command.sh) with seed 1: 6700 steps,
# 2 threads, alone; then the text-only model with the same text budget (seed 1).
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
.venv/bin/python benchmarks/ugen_tiny.py --steps 6700 --image-top-k 1 --seed 1 --out runs/s18/ugen_seed1/run --results runs/s18/ugen_seed1/results
