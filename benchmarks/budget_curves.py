"""Annotation-budget curves from a quality-benchmark run (issue 21): one table and one figure.

Reads RUN/results.json of `benchmarks/quality.py` with round-1 variants named UNIT_STRATEGY_Npct (and the
control round `dts_control`, round 0 `noisy_dts`), and prints, per strategy and budget, the network's mIoU on
the held-out scenes and the pool's pseudo-label mIoU as mean +- half the spread over training seeds (the
quality table's convention), with each cell's gain over the control round. The figure (RUN/budget_curves.png,
or --png) draws both against the budget with the control round as a band.

    python benchmarks/budget_curves.py RUN [--png PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import SELECTION, selection_of, split_name  # noqa: E402

METRICS = (("network mIoU (held-out scenes)", ("miou",)), ("pseudo-label mIoU (pool)", ("pseudo_labels", "miou")))


def _value(result: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        result = result.get(key) if isinstance(result, dict) else None
    return result


def curves(variants: dict) -> tuple[dict, dict]:
    """results.json's variants -> ({(unit_strategy, percent): {metric: [per seed]}}, {reference: {metric: [...]}})
    for the references dts_control and noisy_dts."""
    points: dict[tuple[str, int], dict] = {}
    refs: dict[str, dict] = {}
    for name, r in variants.items():
        kind, _ = split_name(name)
        if SELECTION.match(kind):
            unit, strategy, percent = selection_of(kind)
            slot = points.setdefault((f"{unit}_{strategy}", percent), {})
        elif kind in ("dts_control", "noisy_dts"):
            slot = refs.setdefault(kind, {})
        else:
            continue
        for label, path in METRICS:
            v = _value(r, path)
            if v is not None:
                slot.setdefault(label, []).append(float(v))
    return points, refs


def cell(xs: list[float] | None) -> str:
    if not xs:
        return "-"
    return f"{np.mean(xs):.2f} +- {(max(xs) - min(xs)) / 2:.1f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def table(points: dict, refs: dict) -> str:
    """Markdown: one block per metric, strategies as rows, budgets as columns (seeds in brackets)."""
    budgets = sorted({p for _, p in points})
    strategies = sorted({s for s, _ in points})
    out = []
    for label, _ in METRICS:
        control = refs.get("dts_control", {}).get(label)
        base = np.mean(control) if control else None
        round0 = refs.get("noisy_dts", {}).get(label)
        out.append(f"{label}; control round (no new labels): {cell(control)}; round 0: {cell(round0)}")
        out.append("| strategy | " + " | ".join(f"{b}%" for b in budgets) + " |")
        out.append("|---|" + "---:|" * len(budgets))
        for s in strategies:
            row = []
            for b in budgets:
                xs = points.get((s, b), {}).get(label)
                gain = f" ({np.mean(xs) - base:+.2f})" if xs and base is not None else ""
                row.append(f"{cell(xs)}{gain} [{len(xs) if xs else 0}]")
            out.append(f"| {s} | " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def figure(points: dict, refs: dict, path: Path, title: str) -> None:
    from autolabel.report.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4.2))
    strategies = sorted({s for s, _ in points})
    for ax, (label, _) in zip(axes, METRICS):
        control = refs.get("dts_control", {}).get(label)
        if control:
            ax.axhspan(min(control), max(control), color="grey", alpha=0.25, label="control round (no labels)")
            ax.axhline(np.mean(control), color="grey", lw=1)
        for s in strategies:
            bs = sorted(b for t, b in points if t == s and points[(t, b)].get(label))
            if not bs:
                continue
            xs = [points[(s, b)][label] for b in bs]
            mean = [np.mean(x) for x in xs]
            half = [(max(x) - min(x)) / 2 for x in xs]
            ax.errorbar(bs, mean, yerr=half, marker="o", capsize=3, label=s)
        ax.set_xscale("log")
        ax.set_xticks(sorted({b for _, b in points}))
        ax.set_xticklabels([f"{b}%" for b in sorted({b for _, b in points})])
        ax.set_xlabel("share of the pool labelled (frames, or their voxels for regions)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    path = args.run / "results.json" if args.run.is_dir() else args.run
    r = json.loads(path.read_text())
    points, refs = curves(r["variants"])
    if not points:
        raise SystemExit(f"{path}: no round-1 variant named UNIT_STRATEGY_Npct")
    meta = r.get("meta", {})
    title = (
        f"{meta.get('world', '?')} world (seed {meta.get('world_seed', '?')}), round 1 = "
        f"{meta.get('round1_steps', '?')} steps from round 0's network; mean +- half the spread over seeds"
    )
    print(title)
    print(table(points, refs))
    png = args.png or path.parent / "budget_curves.png"
    figure(points, refs, png, title)
    print(f"figure: {png}")


if __name__ == "__main__":
    main()
