# v3 command (s12) with seed=1, compiled then eager, each stopped after its step-3000 val eval
cd /work/main
export HF_HUB_OFFLINE=1 UNIAR_THREADS=2
ST='stages=[{name: A, fraction: 0.1083, weights: {text: 1.0}}, {name: B, fraction: 0.5769, weights: {t2i: 0.35, caption: 0.15, vqa: 0.15, edit: 0.15, interleaved: 0.05, text: 0.15}}, {name: L, fraction: 0.1296, weights: {vqa: 1.0}, vqa_type_weights: {exists: 1, where: 1}, restart_lr: 3.0e-4, reset_moments: true}, {name: M, fraction: 0.1852, weights: {t2i: 0.15, caption: 0.2, vqa: 0.3, edit: 0.25, text: 0.1}, vqa_type_weights: {color: 0.25, shape: 0.25, count: 0.1, exists: 0.8, where: 0.8}}]'
for mode in true false; do
  name=v3_seed1_compile_$mode
  TORCH_LOGS=recompiles .venv/bin/python benchmarks/ugen_tiny.py --steps 5400 --image-top-k 1 --out runs/s17/$name --results runs/s17/${name}_results "$ST" data.exists_near_miss=0.7 eval.every=1000 optim.compile=$mode seed=1 > runs/s17/$name.log 2>&1 &
  pid=$!
  until grep -q '"step": 3000' runs/s17/$name/unified/eval.jsonl 2>/dev/null; do sleep 10; if ! kill -0 $pid 2>/dev/null; then break; fi; done
  kill $pid; wait $pid 2>/dev/null
done
