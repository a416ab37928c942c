# ugen-tiny s19, rewarm: stage B restarts the learning-rate schedule (restart_lr 1e-3: stage A's
# 300 steps then warm up and decay to the floor on their own; B warms up again over 200 steps), to
# soften the shock at B's start that costs the Python docs what stage A taught (ppl_by_part/).
# 3000 steps, seed 0, one thread; against s18's loss_weights base arm (same steps and seed; its
# text-only model, copied into runs/s19/rewarm/text_only and taken by --reuse: the stages do not change the text rows).
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=1
A='{name: A, fraction: 0.1, weights: {text: 1.0}}'
W='{t2i: 0.35, caption: 0.15, vqa: 0.15, edit: 0.15, interleaved: 0.05, text: 0.15}'
.venv/bin/python benchmarks/ugen_tiny.py --steps 3000 --image-top-k 1 --out runs/s19/rewarm --reuse \
  --results runs/s19/rewarm/results "stages=[$A, {name: B, fraction: 0.9, weights: $W, restart_lr: 1.0e-3}]"
