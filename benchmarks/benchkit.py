"""Shared machinery of the benchmarks: UniFluid runs (unifluid_tiny.py, unifluid_ablations.py), step timings.

A *run* is one arm (a preset plus the overrides that define it) trained with one seed and scored;
its JSON is written as soon as it finishes (`<results>/<bench>/<arm>_seed<k>.json`), so seeds and
arms can be added later without rerunning the others. A report aggregates whatever run files exist:
mean ± std over seeds (sample std, ddof=1; 0 with one seed).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uniar.errors import UserError
from uniar.utils.io import atomic_path, json_default, write_json

RESULTS = Path(__file__).parent / "results"
ALL_TASKS = ("t2i", "caption", "vqa", "edit", "text")
LOWER_IS_BETTER = {"fid_sw", "text_ppl", "t2i_s_per_image", "sample_s_per_image"}


@dataclass
class Arm:
    """One configuration under test: a preset, the overrides that define it, what it trains and is scored on."""

    name: str
    preset: str = "unifluid-tiny"
    overrides: list[str] = field(default_factory=list)  # applied after the user's, so they define the arm
    only_tasks: tuple[str, ...] | None = None  # train on these tasks of the preset's mixture only (one stage)
    params: dict = field(default_factory=dict)  # what the arm varies, for reports and plots

    @property
    def family(self) -> str:
        return "ugen" if self.preset.startswith("ugen") else "unifluid"

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks the arm is scored on: the ones it trains (text perplexity only if it trains text)."""
        if self.only_tasks is None:
            return ALL_TASKS
        return tuple(t for t in ALL_TASKS if t in self.only_tasks)


# ---- command line ------------------------------------------------------------------------------


def add_common_args(ap: argparse.ArgumentParser, seeds: list[int], n: int, out: str, steps: int = 1200,
                    ugen: bool = True) -> None:
    """Options every UniFluid benchmark shares: budget, seeds, data sizes, sampling, folders, threads."""
    ap.add_argument("--steps", type=int, default=steps, help="optimizer steps of every run (same for every arm)")
    ap.add_argument("--seeds", type=int, nargs="+", default=seeds)
    ap.add_argument("-n", type=int, default=n, help="examples per task and split")
    ap.add_argument("--kl-tokenizer", default=None, help="UniFluid's image tokenizer (default: the preset's)")
    if ugen:
        ap.add_argument("--vq-tokenizer", default=None, help="UGen's image tokenizer (default: the preset's)")
        ap.add_argument("--ugen-top-k", type=int, default=8, help="UGen's image top-k")
    ap.add_argument("--cfg", type=float, default=2.0, help="guidance scale for images (both families)")
    ap.add_argument("--cfg-schedule", default="constant", choices=("constant", "linear"), help="UniFluid")
    ap.add_argument("--diffusion-steps", type=int, default=0, help="UniFluid; 0 = the head's default")
    ap.add_argument("--image-temperature", type=float, default=1.0, help="UniFluid's diffusion temperature")
    ap.add_argument("--no-fid", action="store_true", help="skip fid_sw (it trains a feature net once if missing)")
    ap.add_argument("--out", default=out, help="run folders (checkpoints, metrics, grids)")
    ap.add_argument("--results", default=str(RESULTS), help="where run JSONs, reports and plots go")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--report-only", action="store_true", help="aggregate existing run files, train nothing")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("overrides", nargs="*", help="key=value overrides applied to every arm")


def run_cli(main) -> int:
    """Run a benchmark's `main()` as a command: errors a user can fix print one line, not a traceback."""
    import sys

    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


TIMING_RECIPE_KEYS = ("presets", "steps", "first_step", "threads", "seed")


def add_step_timing_args(ap: argparse.ArgumentParser, steps: int) -> None:
    """The arguments of the step-timing benchmarks (cpu_attention.py, train_compile.py)."""
    ap.add_argument("--presets", nargs="+", default=["ugen-tiny", "unifluid-tiny"])
    ap.add_argument("--steps", type=int, default=steps, help="timed optimizer steps per preset and mode")
    ap.add_argument("--first-step", type=int, default=1400, help="where in the schedule (stage B) to time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=str(RESULTS))


def timing_env(threads: int) -> dict:
    """When and where a step-timing benchmark ran."""
    import platform

    import torch

    return {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(), "threads": threads,
            "torch": torch.__version__}


def set_threads(n: int) -> None:
    """Two busy processes with two threads each are ~4x slower here than one thread each: let the user pin it."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


def sampling_for(family: str, args, seed: int):
    """The sampling recipe of a family: UGen top-k + CFG; UniFluid diffusion head + CFG."""
    from uniar.sample.decode import SamplingConfig

    if family == "ugen":
        return SamplingConfig(image_temperature=1.0, image_top_k=args.ugen_top_k, cfg_scale=args.cfg, seed=seed)
    return SamplingConfig(image_temperature=args.image_temperature, cfg_scale=args.cfg,
                          cfg_schedule=args.cfg_schedule, diffusion_steps=args.diffusion_steps, seed=seed)


# ---- one run -----------------------------------------------------------------------------------


def make_config(arm: Arm, seed: int, args, out_dir: Path, base: list[str] = ()):
    """The arm's TrainConfig: preset, tokenizer, seed, `base`, the user's overrides, then the arm's."""
    from uniar.config import load_config
    from uniar.configs import resolve
    from uniar.train.config import StageConfig, TrainConfig

    tokenizer = args.vq_tokenizer if arm.family == "ugen" else args.kl_tokenizer
    cfg = load_config(TrainConfig, resolve(arm.preset), [
        *([f"model.image_tokenizer={tokenizer}"] if tokenizer else []), f"out_dir={out_dir}", f"seed={seed}",
        *base, *args.overrides, *arm.overrides])
    if arm.only_tasks is not None:
        # one stage holding the kept tasks of the preset's last (full) mixture, in their proportions
        weights = {t: w for t, w in cfg.stages[-1].weights.items() if t in arm.only_tasks and w > 0}
        if not weights:
            raise UserError(f"arm {arm.name}: none of {arm.only_tasks} is in the preset's mixture")
        cfg.stages = [StageConfig(arm.name, 1.0, weights)]
    return cfg


def train(cfg, progress: bool = True, evaluate_fn=None) -> dict:
    """Train `cfg` to the end; wall time and throughput (from the run's metrics.csv)."""
    from uniar.train.loop import Trainer, read_metrics

    t = time.time()
    trainer = Trainer(cfg, progress=progress)
    trainer.run(evaluate_fn=evaluate_fn)
    train_s = time.time() - t
    last = read_metrics(cfg.out_dir)[-1]
    # elapsed_s counts periodic evaluations too; runs without them give pure training throughput
    return {"train_s": train_s, "tokens_per_s": float(last["tokens_per_s"]),
            "steps_per_s": float(last["step"]) / max(float(last["elapsed_s"]), 1e-9),
            "params_m": sum(p.numel() for p in trainer.model.parameters()) / 1e6}


def score(run_dir: Path, arm: Arm, sampling, args, splits) -> tuple[dict, dict]:
    """Scores of a run's final checkpoint on each split (every task the arm trains); (metrics, wall)."""
    from uniar.eval.evaluate import evaluate
    from uniar.sample.pipeline import Pipeline

    ckpt = run_dir / "checkpoints" / "final"
    pipe = Pipeline.from_checkpoint(ckpt)
    metrics, wall = {"run": {}}, {}
    for split in splits:
        t = time.time()
        # teacher-forced t2i beside the sampled one: it tells "not learned" from "drifts when sampling"
        tasks = arm.tasks + (("tf_t2i",) if "t2i" in arm.tasks else ())
        report = evaluate(pipe, split, n=args.n, sampling=sampling, tasks=tasks, out_dir=run_dir / "eval",
                          fid=not args.no_fid, checkpoint=str(ckpt))
        metrics[split] = report["metrics"]
        for k, v in report["timing"].items():  # t2i_s_per_image over the first split's examples
            metrics["run"].setdefault(k, v)
        wall[f"eval_{split}_s"] = time.time() - t
    return metrics, wall


def arm_config(arm: Arm, seed: int, args):
    """The TrainConfig of one study run: a fixed step budget, no periodic evaluation or checkpoints."""
    return make_config(arm, seed, args, Path(args.out) / f"{arm.name}_seed{seed}",
                       base=[f"steps={args.steps}", "eval.every=0", "checkpoint_every=0"])


def planned_identity(arm: Arm, seed: int, args, splits=("test",)) -> dict:
    """The identity (see run_identity) the study run of `arm` with `seed` will have."""
    from uniar.config import to_dict

    return run_identity(to_dict(arm_config(arm, seed, args)), sampling_for(arm.family, args, seed).describe(),
                        args.n, splits, arm.tasks, not args.no_fid)


def run_arm(bench: str, arm: Arm, seed: int, args, splits=("test",), measure=None) -> dict:
    """Train and score one arm with one seed at a fixed step budget; the run's record (not yet saved).

    `measure(pipe, sampling) -> dict`, if given, adds its numbers to the run's `run` section.
    """
    from uniar.config import to_dict
    from uniar.sample.pipeline import Pipeline

    run_dir = Path(args.out) / f"{arm.name}_seed{seed}"
    cfg = arm_config(arm, seed, args)
    sampling = sampling_for(arm.family, args, seed)
    identity = planned_identity(arm, seed, args, splits)
    twin = find_twin(Path(args.results), identity)
    if twin is not None:
        return reuse(twin, bench, arm, args, sampling, measure)
    trained = train(cfg, progress=not args.no_progress)
    metrics, wall = score(run_dir, arm, sampling, args, splits)
    metrics["run"].update({k: v for k, v in trained.items() if k != "train_s"})
    if measure is not None:
        metrics["run"].update(measure(Pipeline.from_checkpoint(run_dir / "checkpoints" / "final"), sampling))
    return {"bench": bench, "arm": arm.name, "seed": seed, "preset": arm.preset, "params": arm.params,
            "budget": {"steps": args.steps}, "steps": cfg.steps, "n": args.n, "splits": list(splits),
            "tasks": list(arm.tasks), "overrides": list(args.overrides), "arm_overrides": arm.overrides,
            "sampling": sampling.describe(), "config": to_dict(cfg), "identity": identity,
            "wall": {"train_s": trained["train_s"], **wall}, "metrics": metrics}


# ---- one run shared by several studies ---------------------------------------------------------


def run_identity(config: dict, sampling: dict, n: int, splits, tasks, fid: bool) -> dict:
    """What makes two records the same run: the config as resolved before training (training fills in
    sizes), less its folder; the sampling recipe; what was scored. The unified default arm is in every
    study; it trains once."""
    import torch

    from uniar.utils.precision import use_bf16

    # optim.bf16=auto trains in bf16 on one machine and fp32 on another: the precision it resolves to
    # here is part of what the run is
    precision = "bf16" if use_bf16(config["optim"]["bf16"], "cuda" if torch.cuda.is_available() else "cpu") else "fp32"
    config = {k: v for k, v in config.items() if k != "out_dir"}
    # through JSON the way run records are written, so a live config and a saved one compare alike
    # (compared as data, not text: 2 and 2.0 are the same λ)
    return json.loads(json.dumps({"config": config, "sampling": sampling, "n": n, "splits": list(splits),
                                  "tasks": list(tasks), "fid": fid, "precision": precision},
                                 default=json_default))


def same_run(identity: dict | None) -> dict | None:
    """An identity as runs are compared: the precision a run trained in, not the setting that chose it
    (`optim.bf16: auto` on an AVX2 CPU and `optim.bf16: false` on an AMX one both train in fp32)."""
    if identity is None or "precision" not in identity:
        return identity
    out = json.loads(json.dumps(identity))
    out["config"]["optim"]["bf16"] = out["precision"]
    return out


def find_twin(results: Path, identity: dict) -> tuple[Path, dict] | None:
    """A finished run of any benchmark under `results` that is this run, with its checkpoint still there."""
    for path in sorted(results.glob("*/*_seed*.json")):
        try:
            r = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(r, dict) and same_run(r.get("identity")) == same_run(identity) and r.get("reused_from") is None and \
                (Path(r["config"]["out_dir"]) / "checkpoints" / "final").is_dir():
            return path, r
    return None


def reuse(twin: tuple[Path, dict], bench: str, arm: Arm, args, sampling, measure=None) -> dict:
    """This arm's record made from a twin run's: same training and scores, this study's names."""
    path, r = twin
    print(f"{bench}: {arm.name} is the run {path} already holds; reusing it", flush=True)
    record = json.loads(json.dumps(r))
    record.update({"bench": bench, "arm": arm.name, "params": arm.params, "overrides": list(args.overrides),
                   "arm_overrides": arm.overrides, "reused_from": str(path)})
    if measure is not None:
        from uniar.sample.pipeline import Pipeline

        ckpt = Path(r["config"]["out_dir"]) / "checkpoints" / "final"
        record["metrics"]["run"].update(measure(Pipeline.from_checkpoint(ckpt), sampling))
    return record


# ---- the run files -----------------------------------------------------------------------------


class RunStore:
    """The run files of one benchmark: `<results>/<bench>/<arm>_seed<k>.json`."""

    def __init__(self, results: str | Path, bench: str):
        self.bench = bench
        self.folder = Path(results) / bench

    def path(self, arm: str, seed: int) -> Path:
        return self.folder / f"{arm}_seed{seed}.json"

    def save(self, record: dict) -> None:
        write_json(self.path(record["arm"], record["seed"]), record)

    def load(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.folder.glob("*_seed*.json"))]

    def done(self, arm: str, seed: int, plan: dict, key: str = "identity") -> bool:
        """True if the run exists as the same run: its record's `key` equals `plan`.

        `plan` says what makes the run (for step-budgeted studies its identity, see run_identity). An
        existing different run is an error, and so are other seeds of the arm that ran differently (say
        before a preset's default changed): seeds of one arm must differ only in their seed.
        """
        plan = same_run(plan)
        path = self.path(arm, seed)
        if path.is_file():
            old = same_run(json.loads(path.read_text()).get(key))
            if old != plan:
                raise UserError(f"{path} holds a different run ({plan_diff(old, plan)}); give the overrides "
                                "that reproduce it, delete it, or use another --results folder")
            return True
        for other in self.load():
            theirs = without_seed(same_run(other.get(key)))
            if other["arm"] == arm and theirs != without_seed(plan):
                raise UserError(f"{self.path(arm, other['seed'])} ran arm {arm} differently "
                                f"({plan_diff(theirs, without_seed(plan))}); pass the "
                                "overrides that reproduce it "
                                "(a preset default may have changed since), or delete it")
        return False


def without_seed(plan: dict | None) -> dict | None:
    """A run's plan less the run seed (in the config and the sampling recipe)."""
    if plan is None:
        return None
    out = json.loads(json.dumps(plan))
    for part in ("config", "sampling"):
        if isinstance(out.get(part), dict):
            out[part].pop("seed", None)
    return out


def plan_diff(old: dict | None, new: dict, limit: int = 4) -> str:
    """The first few keys where two plans differ, as 'key: old -> new'."""
    if old is None:
        return "its record does not say how it was made"
    diffs = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{where}.{k}" if where else k)
        elif a != b:
            diffs.append(f"{where}: {a!r} -> {b!r}")

    walk(old, new, "")
    return "; ".join(diffs[:limit]) + (f"; and {len(diffs) - limit} more" if len(diffs) > limit else "")


def run_all(store: RunStore, arms: list[Arm], args, **kw) -> None:
    """Every (seed, arm) not yet done; each run's file is written as soon as it finishes."""
    for seed in args.seeds:
        for arm in arms:
            if store.done(arm.name, seed, planned_identity(arm, seed, args)):
                print(f"{store.bench}: {arm.name} seed {seed} already done, skipping", flush=True)
                continue
            print(f"{store.bench}: {arm.name} seed {seed}, {args.steps} steps", flush=True)
            store.save(run_arm(store.bench, arm, seed, args, **kw))


# ---- aggregation and reports -------------------------------------------------------------------


def mean_std(values) -> list[float]:
    v = np.asarray([float(x) for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return [math.nan, math.nan]
    return [float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0]


def per_arm(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by arm, in the order they come."""
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(r["arm"], []).append(r)
    return out


def aggregate(runs: list[dict], order: list[str] | None = None) -> dict:
    """Per arm: seeds, budgets, params, and mean ± std over seeds of every numeric score and wall time."""
    by_arm = per_arm(runs)
    names = [a for a in (order or []) if a in by_arm] + sorted(a for a in by_arm if a not in (order or []))
    arms = {}
    for name in names:
        rs = sorted(by_arm[name], key=lambda r: r["seed"])
        sections = {s for r in rs for s in r["metrics"]}
        metrics = {}
        for s in sorted(sections):
            keys = {k for r in rs for k, v in r["metrics"].get(s, {}).items() if isinstance(v, (int, float))}
            metrics[s] = {k: mean_std(r["metrics"].get(s, {}).get(k) for r in rs) for k in sorted(keys)}
        wall_keys = {k for r in rs for k in r["wall"]}
        arms[name] = {"seeds": [r["seed"] for r in rs], "budgets": sorted({json.dumps(r["budget"]) for r in rs}),
                      "steps": sorted({r["steps"] for r in rs}), "params": rs[0].get("params", {}),
                      "preset": rs[0]["preset"], "metrics": metrics,
                      "wall": {k: mean_std(r["wall"].get(k) for r in rs) for k in sorted(wall_keys)}}
    return {"arms": arms, "runs": len(runs)}


def value(agg_arm: dict, section: str, key: str) -> list[float]:
    return agg_arm["metrics"].get(section, {}).get(key, [math.nan, math.nan])


def fmt(ms: list[float], digits: int = 4) -> str:
    mean, std = ms
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(agg: dict, rows: list[tuple[str, str]], arms: list[str] | None = None) -> list[str]:
    """Markdown table: one row per (section, metric), one column per arm (mean ± std over its seeds)."""
    arms = [a for a in (arms or agg["arms"]) if a in agg["arms"]]
    a = agg["arms"]
    lines = ["| metric | " + " | ".join(f"{name} (seeds {a[name]['seeds']})" for name in arms) + " |",
             "|---|" + "---|" * len(arms)]
    for section, key in rows:
        if all(math.isnan(value(a[name], section, key)[0]) for name in arms):
            continue
        where = f" ({section})" if section not in ("test", "run") else ""
        cells = " | ".join(fmt(value(a[name], section, key)) for name in arms)
        lines.append(f"| {label(key)}{where} | {cells} |")
    return lines


def label(key: str) -> str:
    """A metric's name, marked ↓ when lower is better."""
    return key + (" ↓" if key in LOWER_IS_BETTER else "")


def recipe_lines(runs: list[dict]) -> list[str]:
    """The shared recipe of a set of runs: budgets, examples, sampling, overrides, wall times."""
    if not runs:
        return ["No runs yet."]
    steps = sorted({r["steps"] for r in runs})
    budget = (f"{steps[0]} optimizer steps per run, the same for every arm and seed" if len(steps) == 1
              else f"**runs differ in budget**: steps {steps}")
    samplings = {}
    for r in runs:
        samplings.setdefault(r["preset"], r["sampling"])
    lines = [f"- Budget: {budget}.",
             f"- Scored on {', '.join(f'`{s}`' for s in runs[0]['splits'])} with {runs[0]['n']} examples per task "
             f"(fid_sw against as many real renders).",
             *override_lines(runs)]
    for preset, s in samplings.items():
        lines.append(f"- Sampling ({preset}; seed = run seed): `{ {k: v for k, v in s.items() if k != 'seed'} }`.")
    lines.append("")
    lines.append("| arm | seed | steps | train min | eval min | tokens/s |")
    lines.append("|---|---|---|---|---|---|")
    for r in sorted(runs, key=lambda r: (r["arm"], r["seed"])):
        ev = sum(v for k, v in r["wall"].items() if k.startswith("eval_"))
        tps = r["metrics"].get("run", {}).get("tokens_per_s", math.nan)
        lines.append(f"| {r['arm']} | {r['seed']} | {r['steps']} | {r['wall']['train_s'] / 60:.1f} | "
                     f"{ev / 60:.1f} | {tps:.0f} |")
    return lines


def override_lines(runs: list[dict]) -> list[str]:
    """The user's overrides, and the λ the UniFluid runs resolved to (the same run may be asked for
    with different overrides, e.g. after a preset default changed)."""
    groups: dict[str, list[str]] = {}
    for r in sorted(runs, key=lambda r: (r["seed"], r["arm"])):
        groups.setdefault(repr(r["overrides"]), []).append(f"{r['arm']} {r['seed']}")
    if len(groups) == 1:
        lines = [f"- Overrides given to every arm: `{runs[0]['overrides']}`."]
    else:
        lines = ["- Overrides given: " + "; ".join(f"`{o}` ({', '.join(who)})" for o, who in groups.items()) + "."]
    lambdas = sorted({r["config"]["model"]["unifluid"]["loss_lambda"] for r in runs if r["preset"].startswith("unifluid")})
    if lambdas:
        lines.append(f"- λ in the UniFluid runs: {', '.join(f'{v:g}' for v in lambdas)}.")
    return lines


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG, atomically."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
