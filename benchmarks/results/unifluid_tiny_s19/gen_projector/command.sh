# unifluid-tiny s19, gen_projector: the preset with model.unifluid.und_projector=gen: an image to be
# understood enters through the generation input projection and current-position table (as a
# generated image is read; in UGen both roles share one embedding table), not a projector of its
# own. The question: does the lookup (exists / where) that t2i's caption-to-cell binding resembles
# then start, as in UGen? The s18 headline's 4965 steps, seed 0, one thread (beside a one-thread
# UGen probe for its first ~20 minutes).
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=1
.venv/bin/python benchmarks/unifluid_tiny.py --steps 4965 --out runs/s19/uf_genproj --results runs/s19/uf_genproj_results --no-progress model.unifluid.und_projector=gen
