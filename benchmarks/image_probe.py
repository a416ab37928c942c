"""What the backbone knows at each token of an image it reads: linear probes, layer by layer.

    python benchmarks/image_probe.py runs/s14/ugen_turn5/unified/checkpoints/final \
        --out benchmarks/results/image_probe/ugen_s14_turn5

Why: `exists` and `where` questions (and the edits that name an object) must *find* an object by
its color and its shape. With the image before the question, the question's tokens can only find
what the image's own tokens already say about themselves. A token covers a quarter of a cell (at
48 px, 2x2 tokens per 16-px cell): its color is in its input, but its object's shape is the shape
of the 2x2 block, which the backbone must compose from neighbours, causally.

This reads `--scenes` images of `val` as captioning reads them (`<caption>` prompt; causal
attention makes the question that would follow irrelevant), takes the hidden state at every image
token after every transformer block (layer 0: the input embedding), and fits a linear softmax
classifier per layer for the shape and for the color of the object in the cell that holds the
token's centre (`nothing` for an empty cell), on 2/3 of the scenes; reported: accuracy on the other third, over all image
tokens and over the last token of each cell in raster order (the first that can see the whole
cell). Majority-class accuracy is given as the floor.

Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from uniar.data.sequence import UND, collate  # noqa: E402
from uniar.data.shapesworld import get_example  # noqa: E402
from uniar.data.shapesworld.render import render_batch  # noqa: E402
from uniar.data.shapesworld.spec import COLOR_NAMES, SHAPES  # noqa: E402
from uniar.errors import UserError  # noqa: E402
from uniar.sample.pipeline import Pipeline  # noqa: E402
from uniar.utils.io import write_json, write_text  # noqa: E402
from uniar.utils.threads import apply_env_threads  # noqa: E402


def token_cells(grid: int) -> tuple[np.ndarray, np.ndarray]:
    """For each token of a grid x grid raster: the ShapesWorld cell (0..8) its centre lies in, and
    whether it is that cell's last token in raster order (the first that can see the whole cell)."""
    r, c = np.divmod(np.arange(grid * grid), grid)
    cells = (3 * (2 * r + 1) // (2 * grid)) * 3 + 3 * (2 * c + 1) // (2 * grid)
    last = np.zeros(grid * grid, dtype=bool)
    for cell in range(9):
        last[np.flatnonzero(cells == cell).max()] = True
    return cells, last


@torch.no_grad()
def image_states(pipe, scenes, batch_size: int = 50) -> tuple[list[torch.Tensor], np.ndarray]:
    """Hidden states at the read image's tokens: one (N_tokens, H) tensor per layer (0 = input),
    and per token (scene, position in the image)."""
    model = pipe.model
    blocks = getattr(model.backbone, "blocks", None)
    if blocks is None:
        raise UserError("image_probe reads the built-in backbone's blocks; this checkpoint's backbone has none")
    images = render_batch(scenes, pipe.image_size)
    layers: list[list[torch.Tensor]] = [[] for _ in range(len(blocks) + 1)]
    where = []
    for s in range(0, len(scenes), batch_size):
        rows = [pipe.builder.caption(pipe.encode_image(im)) for im in images[s:s + batch_size]]
        batch = collate(rows, pad_id=pipe.text_tok.pad_id, side="right")
        at = batch.role == UND
        outs = []
        hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
                 for b in blocks]
        try:
            embeds = model.embed(batch.ids, batch)
            model.hidden(embeds, batch.positions, None)
        finally:
            for h in hooks:
                h.remove()
        for layer, h in enumerate([embeds] + outs):
            layers[layer].append(h[at].float())
        row = torch.arange(len(rows))[:, None].expand_as(at)[at] + s
        where.append(torch.stack([row, batch.image_pos[at]], 1))
    return [torch.cat(x) for x in layers], torch.cat(where).numpy()


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int = 300) -> torch.nn.Linear:
    """A linear softmax classifier on standardised features (full-batch L-BFGS, light L2)."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(x), y) + 1e-3 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe


def run(checkpoint: str, n_scenes: int) -> dict:
    pipe = Pipeline.from_checkpoint(checkpoint)
    scenes = [get_example("val", i, pipe.cfg.data.max_objects if pipe.cfg else 3).scene for i in range(n_scenes)]
    states, where = image_states(pipe, scenes)
    n_tokens = int(where[:, 1].max()) + 1
    grid = math.isqrt(n_tokens)
    if grid * grid != n_tokens or grid < 3:
        raise UserError(f"image_probe needs a square grid of at least 3x3 tokens; got {n_tokens} tokens")
    cell_table, last_table = token_cells(grid)
    cells, is_last = cell_table[where[:, 1]], last_table[where[:, 1]]
    labels = {}
    for attr, names in (("shape", SHAPES), ("color", COLOR_NAMES)):
        lab = []
        for scene, cell in zip(where[:, 0], cells):
            obj = scenes[scene].object_at(int(cell))
            lab.append(names.index(getattr(obj, attr)) if obj else len(names))
        labels[attr] = (torch.tensor(lab), len(names) + 1)
    train = torch.from_numpy(where[:, 0] < (2 * n_scenes) // 3)
    last = torch.from_numpy(is_last)
    result = {"checkpoint": checkpoint, "scenes": n_scenes, "grid": grid, "layers": []}
    for layer, x in enumerate(states):
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        z = (x - mean) / std
        row = {"layer": layer}
        for attr, (y, n) in labels.items():
            probe = fit_probe(z[train], y[train], n)
            ok = probe(z).argmax(-1) == y
            row[attr] = float(ok[~train].float().mean())
            row[f"{attr}_last"] = float(ok[~train & last].float().mean())
        result["layers"].append(row)
    for attr, (y, n) in labels.items():
        counts = torch.bincount(y[~train], minlength=n)
        result[f"{attr}_majority"] = float(counts.max() / counts.sum())
    return result


def markdown(r: dict) -> str:
    lines = [f"# Linear probes at the read image's tokens: {r['checkpoint']}", "",
             f"{r['scenes']} `val` scenes (probes fit on 2/3, scored on 1/3), {r['grid']}x{r['grid']} tokens, "
             f"{r['seconds']:.0f} s. Label: the shape / color of the object in the token's cell, or `nothing`. "
             f"Majority class: shape {r['shape_majority']:.3f}, color {r['color_majority']:.3f}. "
             "`last`: the last token of each cell in raster order.", "",
             "| layer | shape | shape, last | color | color, last |", "|---|---|---|---|---|"]
    for row in r["layers"]:
        lines.append(f"| {row['layer']} | {row['shape']:.3f} | {row['shape_last']:.3f} | {row['color']:.3f} | "
                     f"{row['color_last']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--out", required=True, help="output path without extension")
    args = ap.parse_args(argv)
    apply_env_threads()
    t = time.time()
    result = run(args.checkpoint, args.scenes)
    result["seconds"] = time.time() - t
    write_json(Path(args.out + ".json"), result)
    write_text(Path(args.out + ".md"), markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
