# unifluid-tiny headline (sessions 21 and 22): the preset as it is (five stages: A text; B1 generation
# first; B2 the mixture; L the lookup stage, lr restarted; M the mixture again, edit-heavy;
# data.exists_near_miss 0.7), --steps 4700 (the preset's own), seed 1, 2 threads, alone.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
.venv/bin/python benchmarks/unifluid_tiny.py --steps 4700 --out runs/unifluid_tiny_headline --results runs/unifluid_tiny_headline_results --seeds 1 --no-progress
