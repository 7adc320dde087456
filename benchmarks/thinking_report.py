"""The thinking study's report: benchmarks/results/thinking_study.json, the plots and the tables, from
the finished jobs' result.json files (benchmarks/thinking_study.py runs them)."""

from __future__ import annotations

import datetime
import glob
import json
import math
import os

ARM_ORDER = ("baseline", "baseline_flops", "pause", "authors", "recipe", "recipe_no_reinforce", "recipe_default_init",
             "recipe_no_entropy", "recipe_p2", "recipe_adapters")
# The plots compare the main arms; the ablations are in the tables.
PLOT_ARMS = ARM_ORDER[:5]
# (panel title, where the value comes from: "curve" keys are per training step, "eval" keys per eval)
PANELS = (("held-out answer accuracy (own prediction)", "eval", (("answer", "think_acc"), ("answer", "base_acc"))),
          ("thought entropy (nats)", "curve", ("thought_entropy",)),
          ("mixing weight w", "curve", ("mixing_weight",)),
          ("mean reward", "curve", ("reward_mean",)),
          ("held-out NLL without thinking", "eval", ("heldout_nll", "nll_base")),
          ("held-out NLL with thinking", "eval", ("heldout_nll", "nll_mix")))


def _get(d, path):
    if path and isinstance(path[0], tuple):  # alternatives: the first that is there
        for alt in path:
            v = _get(d, alt)
            if v is not None:
                return v
        return None
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def _stats(xs):
    xs = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": m, "std": sd, "min": min(xs), "max": max(xs), "n": len(xs)}


def _tail_mean(curve, key, n=10):
    xs = [c.get(key) for c in curve[-n:] if c.get(key) is not None]
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else None


def final_metrics(r: dict) -> dict:
    """The numbers the tables compare, from one job's result."""
    f, curves = r["final"], r.get("curves") or []
    out = {"train_seconds": r.get("train_seconds"), "steps": r.get("steps"),
           "thought_entropy_last10": _tail_mean(curves, "thought_entropy"),
           "thought_entropy_first10": _tail_mean(curves[:10], "thought_entropy"),
           "mixing_weight_last10": _tail_mean(curves, "mixing_weight"),
           "reward_last10": _tail_mean(curves, "reward_mean"),
           "heldout_nll_base": _get(f, ("heldout_nll", "nll_base")),
           "heldout_nll_mix": _get(f, ("heldout_nll", "nll_mix"))}
    if r["task"] == "multihop":
        a = f["answer"]
        out.update(answer_acc_base=a["base_acc"], answer_nll_base=a["base_nll"],
                   answer_acc_think=a.get("think_acc"), answer_nll_think=a.get("think_nll"),
                   one_hop_acc_base=f["one_hop"]["base_acc"], answers=a["n"])
        # The arm's own prediction: with thinking if it thinks (pause included), else without.
        out["answer_acc"] = a.get("think_acc", a["base_acc"])
        out["answer_nll"] = a.get("think_nll", a["base_nll"])
    else:
        for task, modes in (f.get("tasks") or {}).items():
            for mode, metrics in modes.items():
                for metric, v in metrics.items():
                    if isinstance(v, (int, float)):
                        out[f"{task}_{metric}_{mode}"] = v
    return out


def collect(work: str) -> dict:
    tasks: dict = {}
    for path in sorted(glob.glob(os.path.join(work, "*", "*", "seed*", "result.json"))):
        with open(path) as f:
            r = json.load(f)
        if r["arm"] == "pretrain":
            continue
        arm = tasks.setdefault(r["task"], {}).setdefault(r["arm"], {"seeds": {}})
        arm["seeds"][str(r["seed"])] = {"final": final_metrics(r), "curves": r.get("curves"), "evals": r.get("evals"),
                                       "raw_final": r["final"]}
    for task in tasks.values():
        for arm in task.values():
            keys = sorted({k for s in arm["seeds"].values() for k in s["final"]})
            arm["summary"] = {k: _stats([s["final"].get(k) for s in arm["seeds"].values()]) for k in keys}
    return tasks


def _series(seeds: dict, source: str, path: tuple):
    """Mean over seeds of a curve (steps present in every seed)."""
    per = []
    for s in seeds.values():
        rows = s["curves"] if source == "curve" else s["evals"]
        pts = {row["step"]: _get(row, path) for row in rows or []}
        per.append({k: v for k, v in pts.items() if v is not None and not (isinstance(v, float) and math.isnan(v))})
    steps = sorted(set.intersection(*[set(p) for p in per])) if per else []
    return steps, [sum(p[k] for p in per) / len(per) for k in steps]


def _n(k: int, what: str) -> str:
    return f"{k} {what}" + ("" if k == 1 else "s")


def plot(task: str, arms: dict, out_png: str) -> None:
    """One panel per PANELS entry that has data, 3 to a row; one colour per arm in every panel. x is the
    share of the arm's own training (step / steps): baseline_flops runs many more, cheaper steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PANELS if any(_series(a["seeds"], p[1], p[2])[0] for a in arms.values())]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.4 * rows), squeeze=False)
    colour = {name: f"C{i}" for i, name in enumerate(PLOT_ARMS)}
    for ax, (title, source, path) in zip(axes.flat, panels):
        for name in [a for a in PLOT_ARMS if a in arms]:
            steps, ys = _series(arms[name]["seeds"], source, path)
            total = max((s["final"].get("steps") or 0) for s in arms[name]["seeds"].values()) or 1
            if steps:
                ax.plot([x / total for x in steps], ys, color=colour[name], lw=1.4,
                        label=f"{name} ({_n(len(arms[name]['seeds']), 'seed')}, {total} steps)")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("share of the arm's training (step / steps)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"thinking study: {task} (mean over seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


TABLE_ROWS = {
    "multihop": (("held-out answer accuracy (the arm's own prediction)", "answer_acc"),
                 ("  worst seed / best seed", ("answer_acc", "min", "max")),
                 ("  without thinking", "answer_acc_base"), ("  with thinking", "answer_acc_think"),
                 ("held-out answer NLL (own prediction)", "answer_nll"),
                 ("one-hop accuracy (chain documents)", "one_hop_acc_base"),
                 ("held-out NLL, all tokens, no thinking", "heldout_nll_base"),
                 ("held-out NLL, all tokens, thinking", "heldout_nll_mix"),
                 ("thought entropy, last 10 steps", "thought_entropy_last10"),
                 ("mixing weight w, last 10 steps", "mixing_weight_last10"),
                 ("training steps", "steps"), ("training seconds", "train_seconds")),
    "smollm2": (("held-out NLL, no thinking", "heldout_nll_base"), ("held-out NLL, thinking", "heldout_nll_mix"),
                ("thought entropy, first 10 steps", "thought_entropy_first10"),
                ("thought entropy, last 10 steps", "thought_entropy_last10"),
                ("mixing weight w, last 10 steps", "mixing_weight_last10"),
                ("csqa authors' metric, no thinking", "csqa_authors_no_think"),
                ("csqa authors' metric, thinking", "csqa_authors_think"),
                ("csqa greedy accuracy, no thinking", "csqa_greedy_no_think"),
                ("csqa greedy accuracy, thinking", "csqa_greedy_think"),
                ("gsm8k authors' metric, no thinking", "gsm8k_authors_no_think"),
                ("gsm8k authors' metric, thinking", "gsm8k_authors_think"),
                ("gsm8k greedy accuracy, no thinking", "gsm8k_greedy_no_think"),
                ("gsm8k greedy accuracy, thinking", "gsm8k_greedy_think"),
                ("training seconds", "train_seconds")),
}


def table(task: str, arms: dict) -> str:
    names = [a for a in ARM_ORDER if a in arms]
    head = f"{'':52s}" + "".join(f"{a + ' (' + str(len(arms[a]['seeds'])) + ')':>24s}" for a in names)
    lines = [head]
    for label, key in TABLE_ROWS[task]:
        cells = []
        for a in names:
            if isinstance(key, tuple):  # (metric, statistic, statistic): two statistics over seeds
                s = arms[a]["summary"].get(key[0])
                cells.append(f"{'-':>24s}" if s is None else f"{s[key[1]]:>13.4g} / {s[key[2]]:<8.4g}")
                continue
            s = arms[a]["summary"].get(key)
            if s is None:
                cells.append(f"{'-':>24s}")
            elif s["n"] > 1:
                cells.append(f"{s['mean']:>13.4g} ± {s['std']:<8.2g}")
            else:
                cells.append(f"{s['mean']:>24.4g}")
        lines.append(f"{label:52s}" + "".join(cells).rstrip())
    return "\n".join(lines)


def report(work: str, results_dir: str, settings: dict | None = None) -> dict:
    tasks = collect(work)
    os.makedirs(results_dir, exist_ok=True)
    doc = {"generated": datetime.datetime.now().isoformat(timespec="seconds"), "settings": settings or {},
           "tasks": tasks}
    path = os.path.join(results_dir, "thinking_study.json")
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(path + ".tmp", path)
    for task, arms in tasks.items():
        plot(task, arms, os.path.join(results_dir, f"thinking_study_{task}.png"))
        print(f"\n{task} (mean ± std over seeds; the number of seeds after each arm)\n{table(task, arms)}")
    print(f"\nwrote {path} and the plots beside it")
    return doc
