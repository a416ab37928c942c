"""`uniar eval CKPT --split test|novel`: score a checkpoint on ShapesWorld, write a report."""

from __future__ import annotations

from pathlib import Path

from uniar.commands.sample import continuous_image_args


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a checkpoint on ShapesWorld (JSON + markdown report)")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="test", choices=("val", "test", "novel"))
    p.add_argument("-n", type=int, default=200, help="examples per task")
    p.add_argument("--out", default=None, help="report folder (default: CKPT/eval)")
    p.add_argument("--tasks", default="t2i,caption,vqa,edit,text",
                   help="comma-separated; tf_t2i adds teacher-forced t2i (each token given the true earlier ones)")
    p.add_argument("--cfg", type=float, default=1.0, help="guidance scale for images")
    p.add_argument("--temperature", type=float, default=1.0, help="image temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=0, help="image top-k")
    continuous_image_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-fid", action="store_true")
    p.add_argument("--bf16", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from uniar.eval.evaluate import evaluate
    from uniar.sample.decode import SamplingConfig
    from uniar.sample.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(args.checkpoint)
    sampling = SamplingConfig(image_temperature=args.temperature, image_top_k=args.top_k,
                              cfg_scale=args.cfg, seed=args.seed, bf16=args.bf16, image_order=args.order,
                              cfg_schedule=args.cfg_schedule, diffusion_steps=args.diffusion_steps,
                              image_steps=args.image_steps)
    out = Path(args.out) if args.out else Path(args.checkpoint) / "eval"
    report = evaluate(pipe, split=args.split, n=args.n, sampling=sampling,
                      tasks=tuple(args.tasks.split(",")), out_dir=out, fid=not args.no_fid,
                      checkpoint=str(args.checkpoint))
    for k, v in report["metrics"].items():
        print(f"{k:>22}: {v:.4f}" if isinstance(v, float) else f"{k:>22}: {v}")
    print(f"report: {out}/eval_{args.split}.md")
    return 0
