"""Held-out (and train) perplexity split by source: pydoc vs ShapesWorld text."""
import sys, numpy as np, torch
torch.set_num_threads(1)
from uniar.sample.pipeline import Pipeline
from uniar.data.corpus import pydoc_documents, shapesworld_documents, token_stream
from uniar.data.sequence import collate  # noqa
from uniar.eval import evaluate as ev

def ppl(pipe, docs, windows=200, length=64):
    ids = token_stream(pipe.text_tok, docs, add_bos=False)
    starts = np.linspace(0, len(ids) - length - 1, num=min(windows, max(1, len(ids) // length)), dtype=int)
    total = count = 0
    for i in range(0, len(starts), 32):
        seqs = [pipe.builder.text_ids(ids[s:s + length].tolist()) for s in starts[i:i + 32]]
        parts = pipe.model.loss(ev.collate(seqs, pad_id=pipe.text_tok.pad_id))
        total += parts.per_task_sum["text"]; count += parts.per_task_count["text"]
    return float(np.exp(total / count)), len(ids)

for ck in sys.argv[1:]:
    pipe = Pipeline.from_checkpoint(ck)
    pipe.model.eval()
    with torch.no_grad():
        r = {name: ppl(pipe, docs) for name, docs in [
            ("pydoc_heldout", pydoc_documents("heldout")), ("sw_heldout", shapesworld_documents("heldout")),
            ("pydoc_train", pydoc_documents("train")), ("sw_train", shapesworld_documents("train"))]}
    print(ck, {k: (round(v[0], 3), v[1]) for k, v in r.items()}, flush=True)
