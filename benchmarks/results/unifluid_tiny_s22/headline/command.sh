# unifluid-tiny s22: the preset as it is (session 21's five stages, data.exists_near_miss 0.7, steps 4700),
# seed 1: session 21's headline recipe (m_edit4_shape, 30.4 train-min then) run again, 2 threads, alone.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
.venv/bin/python benchmarks/unifluid_tiny.py --steps 4700 --out runs/s22/uf_headline --results runs/s22/uf_headline_results --seeds 1 --no-progress
