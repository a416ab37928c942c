# ugen-tiny s16: the preset as shipped (optim.compile: auto, new this session; no other change),
# sized by the benchmark's budget probe for 27.5 train-min, seed 0, 2 threads, alone on the machine;
# then the text-only model with the same text budget (not timed).
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
.venv/bin/python benchmarks/ugen_tiny.py --minutes 27.5 --image-top-k 1 --out runs/s16/ugen_preset --results runs/s16/ugen_preset_results
