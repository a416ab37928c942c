# unifluid-tiny s21: the five-stage preset (A, B1, B2, the lookup stage L, an edit-heavy mixed stage M;
# data.exists_near_miss 0.7), --steps 4400 (m_edit4_shape's 4700 steps of the same stages took 30.4 min),
# seed 1, 2 threads, alone.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
.venv/bin/python benchmarks/unifluid_tiny.py --steps 4400 --out runs/s22/uf_preset --results runs/s22/uf_preset_results --seeds 1 --no-progress
