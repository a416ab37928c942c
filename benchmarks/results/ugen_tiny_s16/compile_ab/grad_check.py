import sys, torch, copy
from uniar.config import load_config
from uniar.train.config import TrainConfig
from uniar.configs import resolve
from uniar.train.loop import Trainer
ck = sys.argv[1]; step = int(sys.argv[2])
res = {}
for mode in ("false", "true"):
    cfg = load_config(TrainConfig, resolve("ugen-tiny"), ["out_dir=/tmp/s16/gc_"+mode, f"init_from={ck}", "steps=5447", "data.pool_size=2000", f"optim.compile={mode}"])
    tr = Trainer(cfg, progress=False)
    if tr.progressive: tr.progressive.set_step(step - cfg.image_stage_start())
    model = tr.model
    grads = []; losses = []
    for s in range(step, step + 4):
        batches = tr.micro_batches(s)
        model.zero_grad()
        tot = 0
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                parts = model.loss(b, tr.progressive)
            l = parts.components["ce"]
            l.backward(); tot += float(l)
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        losses.append(tot)
    res[mode] = (grads, losses)
print("losses eager", [round(x, 4) for x in res["false"][1]])
print("losses comp ", [round(x, 4) for x in res["true"][1]])
for i in range(4):
    ge, gc = res["false"][0][i], res["true"][0][i]
    worst = sorted(((torch.nn.functional.cosine_similarity(ge[n].flatten().float(), gc[n].flatten().float(), dim=0).item(), n) for n in ge))[:4]
    print(i, [(round(c, 4), n) for c, n in worst])
