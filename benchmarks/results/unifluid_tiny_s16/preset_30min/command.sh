# unifluid-tiny s16: the preset as shipped (B2's VQA type weights from s15, optim.compile: auto, new
# this session), sized by the benchmark's own budget probe for 27.5 train-min (margin for a machine
# that slows), seed 0, 2 threads, alone on the machine.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
.venv/bin/python benchmarks/unifluid_tiny.py --minutes 27.5 --out runs/s16/uf_preset --results runs/s16/uf_preset_results --no-progress
