# s23: the preset (A 0.1, B text 0.15) at 3000 steps, seed 0, 1 thread: the same-machine base for the probe arms.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=1
.venv/bin/python benchmarks/ugen_tiny.py --steps 3000 --image-top-k 1 --out runs/s23/probe/base \
  --results runs/s23/probe/base/results > runs/s23/probe/base.log 2>&1
