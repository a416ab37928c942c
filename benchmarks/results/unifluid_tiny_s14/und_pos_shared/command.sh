cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
.venv/bin/python benchmarks/unifluid_tiny.py --steps 3897 --out runs/s14/uf_shared --results runs/s14/uf_shared_results --no-progress model.unifluid.und_pos_shared=true
