"""``autolabel export | inspect | eval STORE``: the pseudo-label store as Occ3D files, a summary, scores."""

from __future__ import annotations

import json
from pathlib import Path

from ..report.figures import coverage_curve_png
from ..store.labels import LabelStore
from ..store.export import evaluate_round, export_occ3d, inspect_store

CURVE_QUANTILES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def export(store_path: str, k: int, fmt: str, out: str, drop_quantile: float | None) -> int:
    if fmt != "occ3d":
        raise ValueError(f"unknown export format {fmt!r}")
    s = export_occ3d(LabelStore.open(store_path), k, out, drop_quantile)
    kept = f", {100 * s['kept_in_mask_camera']:.1f}% of mask_camera voxels kept" if drop_quantile is not None else ""
    print(
        f"exported round {k}: {s['frames']} frames to {Path(out) / 'gts'}{kept}; provenance in "
        f"{Path(out) / 'export.json'}"
    )
    return 0


def inspect(store_path: str) -> int:
    print(inspect_store(LabelStore.open(store_path)))
    return 0


def evaluate(store_path: str, k: int, gts: str, drop_quantile: float, out: str | None) -> int:
    store = LabelStore.open(store_path)
    quantiles = tuple(sorted(set(CURVE_QUANTILES) | {drop_quantile}))
    r = evaluate_round(store, k, gts, quantiles)
    print(f"round {k} against {gts} ({r['frames']} frames, within mask_camera), all labels:")
    print(r["scores"].table())
    print(f"\n{'drop quantile':>14}{'coverage %':>12}{'mIoU kept':>11}{'geo IoU kept':>14}")
    for c in r["curve"]:
        miou, geo = (float("nan") if v is None else v for v in (c["miou"], c["geometric_iou"]))  # None: no class kept
        print(f"{c['drop_quantile']:>14.1f}{100 * c['coverage']:>12.1f}{miou:>11.2f}{geo:>14.2f}")
    folder = Path(out) if out else Path(store_path).parent / f"round_{k}" / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pseudo_labels.json").write_text(
        json.dumps(
            {"round": k, "gts": str(gts), "frames": r["frames"], "all": r["scores"].as_dict(), "curve": r["curve"]},
            indent=1,
        )
    )
    png = coverage_curve_png(
        r["curve"], folder / "coverage_curve.png", f"round {k} pseudo-labels: precision vs coverage"
    )
    print(f"wrote {folder / 'pseudo_labels.json'} and {png}")
    return 0
