"""`uniar generate | caption | ask | edit`: use a trained checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _sampling_args(p: argparse.ArgumentParser, images: bool) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy (default: 1.0 for images, 0 for text)")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    if images:
        g.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
        continuous_image_args(g)
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPU)")


def continuous_image_args(g) -> None:
    """Options of continuous images (UniFluid), shared by generate, edit and eval."""
    g.add_argument("--order", default="", choices=("", "raster", "random"),
                   help="continuous images: token order (default: as the model was trained)")
    g.add_argument("--cfg-schedule", default="constant", choices=("constant", "linear"),
                   help="continuous images: guidance constant, or ramped from 1 over the image (MAR)")
    g.add_argument("--diffusion-steps", type=int, default=0,
                   help="continuous images: reverse diffusion steps per token (0 = the head's default)")
    g.add_argument("--image-steps", type=int, default=0,
                   help="continuous images, random order: draw each image in this many steps, several "
                        "tokens per step on MAR's cosine schedule (0 = one token per step)")


def sampling_from_args(args, images: bool):
    from uniar.sample.decode import SamplingConfig

    s = SamplingConfig(seed=args.seed, max_new_tokens=args.max_new_tokens, bf16=args.bf16)
    if images:
        s.image_temperature = 1.0 if args.temperature is None else args.temperature
        s.image_top_k, s.image_top_p, s.cfg_scale = args.top_k, args.top_p, args.cfg
        s.image_order, s.cfg_schedule = args.order, args.cfg_schedule
        s.diffusion_steps, s.image_steps = args.diffusion_steps, args.image_steps
        s.__post_init__()  # the checks of each field
    else:
        s.text_temperature = 0.0 if args.temperature is None else args.temperature
        s.text_top_k, s.text_top_p = args.top_k, args.top_p
    return s


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="text-to-image: draw images for prompts",
                              description="Draw one image per prompt; writes PNGs and a grid.")
    p.add_argument("checkpoint")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--prompts", help="a text file with one prompt per line")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("-n", "--num", type=int, default=1, help="images per prompt")
    _sampling_args(p, images=True)
    p.set_defaults(func=run_generate)

    p = subparsers.add_parser("caption", help="caption images")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", help="image files")
    _sampling_args(p, images=False)
    p.set_defaults(func=run_caption)

    p = subparsers.add_parser("ask", help="answer a question about an image (VQA)")
    p.add_argument("checkpoint")
    p.add_argument("image")
    p.add_argument("question")
    _sampling_args(p, images=False)
    p.set_defaults(func=run_ask)

    p = subparsers.add_parser("edit", help="edit an image following an instruction")
    p.add_argument("checkpoint")
    p.add_argument("image")
    p.add_argument("instruction")
    p.add_argument("--out", required=True, help="output PNG file")
    _sampling_args(p, images=True)
    p.set_defaults(func=run_edit)


def _pipeline(path):
    from uniar.sample.pipeline import Pipeline

    return Pipeline.from_checkpoint(path)


def read_image(path: str, size: int):
    """An image file as uint8 (size, size, 3): RGB, short side resized, centre-cropped."""
    from uniar.data.manifest import load_image

    return load_image(path, size)


def run_generate(args) -> int:
    from uniar.errors import UserError
    from uniar.utils.grid import image_grid
    from uniar.utils.io import save_image

    if args.prompt is not None:
        prompts = [args.prompt]
    else:
        path = Path(args.prompts)
        if not path.is_file():
            raise UserError(f"prompt file not found: {path}")
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not prompts:
            raise UserError(f"{path} holds no prompts (one per line)")
    pipe = _pipeline(args.checkpoint)
    sampling = sampling_from_args(args, images=True)
    expanded = [p for p in prompts for _ in range(args.num)]
    images = pipe.t2i(expanded, sampling)
    out = Path(args.out)
    records = []
    for i, (prompt, im) in enumerate(zip(expanded, images)):
        name = f"{i:05d}.png"
        save_image(out / name, im)
        records.append({"file": name, "prompt": prompt})
    save_image(out / "grid.png", image_grid(images, expanded, cols=min(8, len(images))))
    from uniar.utils.io import write_json

    write_json(out / "samples.json", {"checkpoint": args.checkpoint, "sampling": sampling.describe(),
                                      "samples": records})
    print(f"wrote {len(images)} images to {out} (grid.png, samples.json)")
    return 0


def run_caption(args) -> int:
    import numpy as np

    pipe = _pipeline(args.checkpoint)
    images = np.stack([read_image(p, pipe.image_size) for p in args.images])
    for path, cap in zip(args.images, pipe.caption(images, sampling_from_args(args, images=False))):
        print(f"{path}\t{cap}")
    return 0


def run_ask(args) -> int:
    import numpy as np

    pipe = _pipeline(args.checkpoint)
    image = read_image(args.image, pipe.image_size)
    print(pipe.vqa(np.stack([image]), [args.question], sampling_from_args(args, images=False))[0])
    return 0


def run_edit(args) -> int:
    import numpy as np

    from uniar.utils.io import save_image

    pipe = _pipeline(args.checkpoint)
    image = read_image(args.image, pipe.image_size)
    edited = pipe.edit(np.stack([image]), [args.instruction], sampling_from_args(args, images=True))[0]
    save_image(args.out, edited)
    print(json.dumps({"out": args.out, "instruction": args.instruction}))
    return 0
