# ugen-tiny s17: the preset with model.prompt_first=true, 6700 steps (planned ~26 train-min at today's
# 0.235 s/step in stage B), seed 0, 2 threads, alone; then the text-only model with the same text budget.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
.venv/bin/python benchmarks/ugen_tiny.py --steps 6700 --image-top-k 1 --out runs/s17/headline/run --results runs/s17/headline/results model.prompt_first=true
