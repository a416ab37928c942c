# unifluid-tiny s18: the preset with model.prompt_first=true (questions and edit instructions before
# their image), sized by the benchmark's budget probe for 27.5 train-min, seed 0, 2 threads, alone.
# prompt_first is now the preset's default, so on today's preset the override is a no-op.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
.venv/bin/python benchmarks/unifluid_tiny.py --minutes 27.5 --out runs/s18/uf_pf --results runs/s18/uf_pf_results --no-progress model.prompt_first=true
