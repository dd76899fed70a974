"""Annotation-budget curves from a quality-benchmark run (issue 21): one table and one figure.

Reads RUN/results.json of `benchmarks/quality.py` with round-1 variants of a UNIT_STRATEGY_Npct kind (named so,
or ablations of one: `--ablation f5=region_fusion_5pct:round0=fused_3d`), the control round (`dts_control` or an
ablation of it naming the same round-0 network) and round 0 (`noisy_dts`, or the network the ablations name), and
prints, per strategy and budget, the network's mIoU on the held-out scenes and the pool's pseudo-label mIoU as
mean +- half the spread over training seeds (the quality table's convention), with each cell's gain over the
control round from the same round-0 network. An ablation with other overrides is a row of its own. The figure
(RUN/budget_curves.png, or --png) draws both against the budget with the control round as a band.

    python benchmarks/budget_curves.py RUN [--png PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import SELECTION, kind_of, recipe_overrides, round0_of, selection_of, split_name  # noqa: E402

METRICS = (("network mIoU (held-out scenes)", ("miou",)), ("pseudo-label mIoU (pool)", ("pseudo_labels", "miou")))


def _value(result: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        result = result.get(key) if isinstance(result, dict) else None
    return result


def curves(variants: dict, ablations: dict | None = None) -> tuple[dict, dict, dict]:
    """results.json's variants (and meta's ablations: name -> [base, overrides]) -> ({(row, percent): {metric: [per
    seed]}}, {round-0 network: {"control" | "round0": {metric: [...]}}}, {row: its round-0 network}).

    A row is UNIT_STRATEGY, with " from X" where round 1 continues another network than noisy_dts and the
    ablation's other overrides in brackets; its reference is the control round (`dts_control` without other
    overrides) that continues the same network."""
    ablations = ablations or {}
    points: dict[tuple[str, int], dict] = {}
    refs: dict[str, dict] = {}
    origin: dict[str, str] = {}
    for name, r in variants.items():
        kind, extra = kind_of(name, ablations), recipe_overrides(name, ablations)
        round0 = split_name(round0_of(name, ablations))[0]
        if SELECTION.match(kind):
            unit, strategy, percent = selection_of(kind)
            row = f"{unit}_{strategy}" + (f" from {round0}" if round0 != "noisy_dts" else "")
            row += f" [{'; '.join(extra)}]" if extra else ""
            origin[row] = round0
            slot = points.setdefault((row, percent), {})
        elif kind == "dts_control" and not extra:
            slot = refs.setdefault(round0, {}).setdefault("control", {})
        else:
            continue
        _add(slot, r)
    for name, r in variants.items():  # the round-0 networks the rows continue
        base = split_name(name)[0]
        if base in origin.values():
            _add(refs.setdefault(base, {}).setdefault("round0", {}), r)
    return points, refs, origin


def _add(slot: dict, result: dict) -> None:
    for label, path in METRICS:
        v = _value(result, path)
        if v is not None:
            slot.setdefault(label, []).append(float(v))


def cell(xs: list[float] | None) -> str:
    if not xs:
        return "-"
    return f"{np.mean(xs):.2f} +- {(max(xs) - min(xs)) / 2:.1f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def table(points: dict, refs: dict, origin: dict) -> str:
    """Markdown: one block per metric, rows as rows, budgets as columns (gain over the row's control round in
    parentheses, seeds in brackets)."""
    budgets = sorted({p for _, p in points})
    rows = sorted({s for s, _ in points})
    out = []
    for label, _ in METRICS:
        for round0 in sorted(set(origin.values())):
            ref = refs.get(round0, {})
            out.append(
                f"{label}, from {round0}: control round (no new labels) {cell(ref.get('control', {}).get(label))}; "
                f"round 0 {cell(ref.get('round0', {}).get(label))}"
            )
        out.append("| strategy | " + " | ".join(f"{b}%" for b in budgets) + " |")
        out.append("|---|" + "---:|" * len(budgets))
        for s in rows:
            control = refs.get(origin[s], {}).get("control", {}).get(label)
            row = []
            for b in budgets:
                xs = points.get((s, b), {}).get(label)
                gain = f" ({np.mean(xs) - np.mean(control):+.2f})" if xs and control else ""
                row.append(f"{cell(xs)}{gain} [{len(xs) if xs else 0}]")
            out.append(f"| {s} | " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def figure(points: dict, refs: dict, origin: dict, path: Path, title: str) -> None:
    from autolabel.report.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4.2))
    strategies = sorted({s for s, _ in points})
    round0s = sorted(set(origin.values()))
    for ax, (label, _) in zip(axes, METRICS):
        for round0 in round0s:
            control = refs.get(round0, {}).get("control", {}).get(label)
            if control:
                name = "control round (no labels)" + (f", from {round0}" if len(round0s) > 1 else "")
                ax.axhspan(min(control), max(control), color="grey", alpha=0.25, label=name)
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
    meta = r.get("meta", {})
    points, refs, origin = curves(r["variants"], meta.get("ablations", {}))
    if not points:
        raise SystemExit(f"{path}: no round-1 variant of a UNIT_STRATEGY_Npct kind")
    title = (
        f"{meta.get('world', '?')} world (seed {meta.get('world_seed', '?')}), round 1 = "
        f"{meta.get('round1_steps', '?')} steps from round 0's network; mean +- half the spread over seeds"
    )
    print(title)
    print(table(points, refs, origin))
    png = args.png or path.parent / "budget_curves.png"
    figure(points, refs, origin, png, title)
    print(f"figure: {png}")


if __name__ == "__main__":
    main()
