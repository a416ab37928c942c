"""UniFluid ablations on ShapesWorld, every arm at the same step budget (benchmarks/benchkit.py runs them).

    python benchmarks/unifluid_ablations.py lambda --steps 1200 --lambdas 0.1 0.3 1 3 10
    python benchmarks/unifluid_ablations.py order --steps 1200 --seeds 0 1 2
    python benchmarks/unifluid_ablations.py single-task --steps 1200
    python benchmarks/unifluid_ablations.py encoder --steps 1200
    python benchmarks/unifluid_ablations.py discrete-vs-continuous --steps 1200
    python benchmarks/unifluid_ablations.py lambda --report-only

- `lambda`: the loss weight λ (loss = text CE + λ · diffusion), the paper's generation/understanding
  trade-off; a trade-off plot goes to <results>/unifluid_lambda.png.
- `order`: raster against random token order for generated images (`data.order`; the model's
  next-position embedding, on by default, tells it where each token goes).
- `single-task`: the unified mixture against generation only (t2i + edit) and understanding only
  (caption + VQA), each keeping those tasks' weights from the preset's mixture, in one stage.
- `encoder`: which encoder reads images to be understood: the built-in conv encoder (trained from
  scratch) or the VAE's own tokens (`model.unifluid.und_encoder`).
- `discrete-vs-continuous`: ugen-tiny (VQ ids, softmax) against unifluid-tiny (KL latents, diffusion
  head) on the same backbone and step budget: every score, fid_sw, training tokens/s and sampling
  time per image.

Each run is saved as it finishes (<results>/unifluid_<study>/<arm>_seed<k>.json); the report
(<results>/unifluid_<study>.json and .md) aggregates whatever runs exist, mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from benchkit import (Arm, RunStore, add_common_args, aggregate, fmt, mean_std, per_arm, pyplot, recipe_lines,
                      run_all, run_cli, save_figure, set_threads, table)
from uniar.errors import UserError
from uniar.utils.io import write_json, write_text

GEN_ROWS = [("test", k) for k in ("t2i_exact", "t2i_recall", "t2i_precision", "t2i_acc_cell", "t2i_acc_color",
                                   "t2i_acc_shape", "tf_t2i_exact", "edit_exact", "fid_sw")]
UND_ROWS = [("test", k) for k in ("caption_exact", "caption_f1", "cider", "vqa_acc")]
TEXT_ROWS = [("test", "text_ppl")]
RUN_ROWS = [("run", k) for k in ("tokens_per_s", "steps_per_s", "params_m", "sample_s_per_image", "t2i_s_per_image")]

GEN_SCORE, UND_SCORE = ("t2i_exact",), ("caption_exact", "vqa_acc")
GEN_DETAIL = ("t2i_acc_cell", "t2i_acc_color", "tf_t2i_exact")


@dataclass
class Study:
    """One ablation: its arms, default seeds, the rows of its table and its own report section."""

    name: str
    title: str
    about: str
    seeds: list[int]
    arms: Callable[[argparse.Namespace], list[Arm]]
    rows: list[tuple[str, str]]
    section: Callable[[list[dict], Path], list[str]] | None = None  # (runs, results folder) -> report lines
    order: Callable[[list[dict]], list[str]] | None = None  # arm order of the report
    options: Callable[[argparse.ArgumentParser], None] | None = None  # the study's own options
    measure: Callable | None = None  # args -> extra per-run numbers, (pipe, sampling) -> dict

    @property
    def bench(self) -> str:
        return "unifluid_" + self.name.replace("-", "_")


# ---- composite scores and paired differences ---------------------------------------------------


def composite(run: dict, keys) -> float:
    """Mean of a run's `test` scores `keys` (e.g. understanding = mean of caption exact and VQA accuracy)."""
    return float(np.mean([run["metrics"]["test"][k] for k in keys]))


def paired_delta(runs: list[dict], a: str, b: str, key: str, section: str = "test") -> list[float] | None:
    """Mean ± std over seeds of (arm a − arm b) for the seeds both have; None if none in common."""
    arms = per_arm(runs)
    by_seed = {r["seed"]: r for r in arms.get(b, [])}
    deltas = [r["metrics"][section][key] - by_seed[r["seed"]]["metrics"][section][key]
              for r in arms.get(a, []) if r["seed"] in by_seed
              and key in r["metrics"].get(section, {}) and key in by_seed[r["seed"]]["metrics"].get(section, {})]
    return mean_std(deltas) if deltas else None


def delta_lines(runs: list[dict], pairs: list[tuple[str, str, str]]) -> list[str]:
    lines = []
    for a, b, key in pairs:
        d = paired_delta(runs, a, b, key)
        if d is not None:
            lines.append(f"- {key}: {a} − {b} = {fmt(d)} (paired by seed)")
    return lines


# ---- lambda ------------------------------------------------------------------------------------


def lambda_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0, 10.0])


def lambda_arms(args) -> list[Arm]:
    return [Arm(f"lambda{v:g}", overrides=[f"model.unifluid.loss_lambda={v!r}"], params={"lambda": v})
            for v in args.lambdas]


def lambda_order(runs: list[dict]) -> list[str]:
    return sorted(per_arm(runs), key=lambda arm: per_arm(runs)[arm][0]["params"]["lambda"])


def lambda_section(runs: list[dict], results: Path) -> list[str]:
    """Generation vs understanding per λ, and the trade-off plot."""
    points = []
    for arm in lambda_order(runs):
        rs = per_arm(runs)[arm]
        test = [r["metrics"]["test"] for r in rs]
        points.append({"lambda": rs[0]["params"]["lambda"], "gen": mean_std(composite(r, GEN_SCORE) for r in rs),
                       "und": mean_std(composite(r, UND_SCORE) for r in rs),
                       "fid": mean_std(t.get("fid_sw") for t in test),
                       **{k: mean_std(t.get(k) for t in test) for k in GEN_DETAIL}})
    lines = ["## Trade-off", "",
             "Generation score = t2i exact match; understanding score = mean of caption exact match and "
             "VQA accuracy (both on `test`). Cell and colour accuracy of the sampled images and the "
             "teacher-forced exact match show generation progress before whole scenes come out right.", "",
             "| λ | generation | understanding | fid_sw ↓ | t2i cell | t2i colour | teacher-forced t2i |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {p['lambda']:g} | {fmt(p['gen'])} | {fmt(p['und'])} | {fmt(p['fid'], 2)} | "
              + " | ".join(fmt(p[k]) for k in GEN_DETAIL) + " |" for p in points]
    if points:
        path = plot_tradeoff(points, results / "unifluid_lambda.png")
        lines += ["", f"![trade-off]({path.name})"]
    return lines


def plot_tradeoff(points: list[dict], path: Path) -> Path:
    plt = pyplot()
    # sampled exact match stays at 0 until a model draws; teacher-forced exact and FID move before it
    panels = [("gen", "generation: t2i exact (test)"), ("tf_t2i_exact", "teacher-forced t2i exact (test)"),
              ("fid", "fid_sw (test, lower is better)")]
    panels = [(k, label) for k, label in panels if any(not np.isnan(p[k][0]) for p in points)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        xs, xe = [p["und"][0] for p in points], [p["und"][1] for p in points]
        ys, ye = [p[key][0] for p in points], [p[key][1] for p in points]
        ax.errorbar(xs, ys, xerr=xe, yerr=ye, fmt="o-", capsize=3)
        for p, x, y in zip(points, xs, ys):
            ax.annotate(f"λ={p['lambda']:g}", (x, y), textcoords="offset points", xytext=(5, 5))
        ax.set_xlabel("understanding: mean of caption exact and VQA accuracy (test)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle("UniFluid λ sweep: generation vs understanding (mean ± std over seeds)")
    fig.tight_layout()
    return save_figure(fig, path)


# ---- order, single task, discrete vs continuous -----------------------------------------------


def order_arms(args) -> list[Arm]:
    return [Arm(o, overrides=[f"data.order={o}"], params={"order": o}) for o in ("raster", "random")]


def order_section(runs: list[dict], results: Path) -> list[str]:
    pairs = [("random", "raster", k) for _, k in GEN_ROWS + UND_ROWS]
    return ["## Random − raster", "", *delta_lines(runs, pairs)]


def single_task_arms(args) -> list[Arm]:
    return [Arm("unified"),
            Arm("generation_only", only_tasks=("t2i", "edit"), params={"tasks": "t2i+edit"}),
            Arm("understanding_only", only_tasks=("caption", "vqa"), params={"tasks": "caption+vqa"})]


def single_task_section(runs: list[dict], results: Path) -> list[str]:
    pairs = ([("unified", "generation_only", k) for _, k in GEN_ROWS]
             + [("unified", "understanding_only", k) for _, k in UND_ROWS])
    return ["## Unified − single task", "", *delta_lines(runs, pairs)]


def encoder_arms(args) -> list[Arm]:
    return [Arm(e, overrides=[f"model.unifluid.und_encoder={e}"], params={"und_encoder": e})
            for e in ("builtin", "vae")]


def encoder_section(runs: list[dict], results: Path) -> list[str]:
    pairs = [("vae", "builtin", k) for _, k in UND_ROWS + GEN_ROWS]
    return ["## vae − builtin", "", *delta_lines(runs, pairs)]


def family_arms(args) -> list[Arm]:
    return [Arm("ugen", preset="ugen-tiny", params={"tokens": "discrete"}),
            Arm("unifluid", preset="unifluid-tiny", params={"tokens": "continuous"})]


def family_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timing-batch", type=int, default=32, help="images per timed pipe.t2i batch")


def sampling_time(args):
    """Seconds per image of `pipe.t2i` on one batch of test captions (after a small warm-up)."""
    batch = args.timing_batch

    def measure(pipe, sampling) -> dict:
        from uniar.data.shapesworld import get_example

        prompts = [get_example("test", i).caption for i in range(batch)]
        pipe.t2i(prompts[:2], sampling)
        t = time.time()
        pipe.t2i(prompts, sampling, batch_size=batch)
        return {"sample_s_per_image": (time.time() - t) / batch, "sample_batch": batch}

    return measure


def family_section(runs: list[dict], results: Path) -> list[str]:
    batch = next((r["metrics"]["run"].get("sample_batch") for r in runs), None)
    return ["Sampling time per image: `pipe.t2i` on one batch of "
            f"{batch} test captions with the family's recipe (guidance doubles the batch). Training "
            "tokens/s: the last row of the run's metrics.csv (sequence positions, padding excluded). "
            "UGen uses the ugen-tiny preset as is (progressive vocabulary on)."]


STUDIES = {s.name: s for s in [
    Study("lambda", "UniFluid λ sweep (unifluid-tiny, ShapesWorld `test`)",
          "loss = text CE + λ · diffusion loss; everything else fixed.", [0], lambda_arms,
          GEN_ROWS + UND_ROWS + TEXT_ROWS, lambda_section, lambda_order, lambda_options),
    Study("order", "UniFluid raster vs random token order (unifluid-tiny, ShapesWorld `test`)",
          "`data.order` for generated images; images are sampled in the order the model was trained with.",
          [0, 1, 2], order_arms, GEN_ROWS + UND_ROWS + TEXT_ROWS, order_section),
    Study("single-task", "UniFluid unified vs single-task training (unifluid-tiny, ShapesWorld `test`)",
          "generation_only trains t2i + edit, understanding_only caption + VQA (each with its weights from "
          "the preset's mixture, one stage); each arm is scored on the tasks it trains.",
          [0], single_task_arms, GEN_ROWS + UND_ROWS + TEXT_ROWS, single_task_section),
    Study("encoder",
          "UniFluid understanding encoder: built-in conv vs the VAE's tokens (unifluid-tiny, ShapesWorld `test`)",
          "`model.unifluid.und_encoder`: `builtin` learns a small conv encoder from scratch with the model; `vae` "
          "reads an image as its (pretrained, frozen) KL tokens, the ones generation predicts. At full size "
          "UniFluid reads images with a pretrained SigLIP; neither tiny choice is that.",
          [0], encoder_arms, UND_ROWS + GEN_ROWS + TEXT_ROWS, encoder_section),
    Study("discrete-vs-continuous", "Discrete (ugen-tiny) vs continuous (unifluid-tiny) tokens, ShapesWorld `test`",
          "the same built-in backbone and step budget; each family with its own tokenizer and sampling recipe.",
          [0], family_arms, GEN_ROWS + UND_ROWS + TEXT_ROWS + RUN_ROWS, family_section,
          options=family_options, measure=sampling_time),
]}


# ---- command line ------------------------------------------------------------------------------


def report(study: Study, args) -> str:
    """Aggregate the study's run files into <results>/<bench>.json and .md; returns the markdown."""
    results = Path(args.results)
    store = RunStore(results, study.bench)
    runs = store.load()
    order = study.order(runs) if study.order else [a.name for a in study.arms(args)]
    agg = aggregate(runs, order)
    lines = [f"# {study.title}", "", study.about, "", "## Recipe", "", *recipe_lines(runs), "",
             "## Scores (mean ± std over seeds)", "", *table(agg, study.rows, order), ""]
    if study.section and runs:
        lines += [*study.section(runs, results), ""]
    text = "\n".join(lines)
    write_json(results / f"{study.bench}.json", {**agg, "runs_detail": runs})
    write_text(results / f"{study.bench}.md", text)
    return text


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="study", required=True)
    for study in STUDIES.values():
        p = sub.add_parser(study.name, help=study.about)
        add_common_args(p, seeds=study.seeds, n=100, out=f"runs/bench/{study.bench}")
        p.add_argument("--arms", nargs="+", default=None,
                       help="train only these arms (two processes can share a study); the report has all")
        if study.options:
            study.options(p)
    return ap


def chosen_arms(study: Study, args) -> list[Arm]:
    arms = study.arms(args)
    if args.arms is None:
        return arms
    unknown = sorted(set(args.arms) - {a.name for a in arms})
    if unknown:
        raise UserError(f"no arm {', '.join(unknown)} in study {study.name}; its arms: "
                        f"{', '.join(a.name for a in arms)}")
    return [a for a in arms if a.name in args.arms]


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    study = STUDIES[args.study]
    set_threads(args.threads)
    if not args.report_only:
        measure = study.measure(args) if study.measure else None
        run_all(RunStore(args.results, study.bench), chosen_arms(study, args), args, measure=measure)
    print(report(study, args))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
