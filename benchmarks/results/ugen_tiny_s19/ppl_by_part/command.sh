# Per-part held-out perplexity (Python docs / ShapesWorld text) of earlier ugen-tiny runs, via the
# benchmark's --reuse (no retraining; the saved test/novel evaluations are kept, the two per-part
# perplexities are filled in). One thread, beside the UniFluid run.
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=1
B=".venv/bin/python benchmarks/ugen_tiny.py --image-top-k 1 --reuse"
A='{name: A, fraction: 0.1, weights: {text: 1.0}}'
W='{t2i: 0.35, caption: 0.15, vqa: 0.15, edit: 0.15, interleaved: 0.05, text: 0.15}'
$B --steps 6700 --out runs/s17/headline/run --results runs/s19/split/s17_headline model.prompt_first=true
$B --steps 6700 --seed 1 --out runs/s18/ugen_seed1/run --results runs/s19/split/s18_seed1
$B --steps 3000 --out runs/s18/lw/base --results runs/s19/split/lw_base
$B --steps 3000 --out runs/s18/lw/text3 --results runs/s19/split/lw_text3 "stages=[$A, {name: B, fraction: 0.9, weights: $W, loss_weights: {text: 3.0}}]"
$B --steps 3000 --out runs/s18/layers6 --results runs/s19/split/layers6 model.backbone.n_layers=6
