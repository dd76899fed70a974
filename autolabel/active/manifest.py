"""The selection manifest of an annotation round: what annotators are asked to label.

``<run>/round_K/select/``: manifest.json (round, strategy, budget, every pick with its scores, cost and
reason), manifest.csv (the same picks, one row each), index.html with PNGs of each picked frame's six
cameras and the model's current prediction (bird's-eye view of the round's pseudo-labels).
``selection.annotation: points`` (issue 24) asks for point labels and boxes (points and boxes per frame
and tile); with ``selection.unit: region`` (issue 21) each row lists the frame's tiles (index and voxel
bounds) and their voxels. Reading the delivery back is autolabel.active.ingest.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from occnet.atomic import atomic_write
from occnet.classes import FREE_ID, colorize

from ..annotation.deliver import BOXES_FILE, POINTS_FILE
from ..data.nuscenes import NuScenesFrames
from ..errors import DataError
from ..provenance import timestamp
from ..store.labels import LabelStore, read_frame
from .config import SelectionConfig
from .regions import RegionGrid
from .select import Pick

SELECT_DIR = "select"  # <run>/round_<K>/select/ holds the manifest and the page
MANIFEST = "manifest.json"


def read_manifest(path: Path) -> dict:
    """A selection manifest; a damaged one is a DataError naming it (it is written atomically, so damage
    comes from outside: restore it, or rerun the round's selection)."""
    try:
        manifest = json.loads(Path(path).read_text())
        for row in manifest["selected"]:
            str(row["token"]), str(row["scene"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"selection manifest {path} is damaged ({type(exc).__name__}: {exc}); restore it or delete "
            f"it and rerun the round's selection"
        ) from None
    return manifest


def bev_image(semantics: np.ndarray) -> np.ndarray:
    """(X, Y, Z) labels -> (Y, X, 3) uint8 top view: the highest non-free voxel's colour per column,
    drawn with x (forward) up and y (left) to the left."""
    occ = (semantics != FREE_ID) & (semantics != 255)
    z = semantics.shape[2] - 1 - np.argmax(occ[:, :, ::-1], axis=2)
    top = np.take_along_axis(semantics, z[..., None], 2)[..., 0]
    top = np.where(occ.any(2), top, FREE_ID)
    img = colorize(top)  # (X, Y, 3)
    return np.ascontiguousarray(img[::-1, ::-1])


def _png(path: Path, image: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def _tiles(p: Pick, regions: RegionGrid) -> list[dict]:
    """The manifest's tiles of a pick, by index: index, voxel bounds (half-open), voxels, score."""
    voxels = regions.voxels()
    c = p.candidate
    return [
        {
            "index": t,
            "bounds": regions.bounds(t),
            "voxels": int(voxels[t]),
            "uncertainty": round(float(c.tile_scores[t]), 6),
            "visible_voxels": int(c.tile_visible[t]),
        }
        for t in sorted(p.tiles)
    ]


def write_manifest(
    folder: Path,
    k: int,
    picks: list[Pick],
    strategy: str,
    pool_size: int,
    n_labelled: int,
    sel: SelectionConfig,
    frames: NuScenesFrames,
    recipe_digest: str,
    deliver_to: Path | None = None,
    store: LabelStore | None = None,
    regions: RegionGrid | None = None,
) -> Path:
    """Round k's manifest.json, manifest.csv and index.html (the picks' cameras from `frames`, their
    bird's-eye view from the store's round k) in `folder`. With `regions` (selection.unit region) every
    row lists its tiles and voxels, and the budget, the cost and `spent` count labelled voxels;
    `deliver_to`: where the folder annotator's delivery goes (None for the oracle, which writes its own)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "token": p.candidate.token,
            "scene": p.candidate.scene,
            **{key: round(v, 6) for key, v in p.candidate.scores.items()},
            "cost": p.voxels if regions is not None else round(p.candidate.cost, 4),
            "reason": p.reason,
        }
        for p in picks
    ]
    if regions is not None:
        for row, p in zip(rows, picks):
            row["voxels"] = p.voxels
            row["tiles"] = _tiles(p, regions)
            before = p.candidate.tiles_before  # a frame annotated by tiles in earlier rounds: which
            row["tiles_labelled_before"] = [] if before is None else np.flatnonzero(before).tolist()
        spent = sum(p.voxels for p in picks)
    else:
        spent = round(sum(p.candidate.cost if sel.cost_model else 1.0 for p in picks), 4)
    if sel.points:  # issue 24: what the annotators label, in their units
        _point_rows(rows, picks, regions is not None)
    budget_unit = "voxels" if regions is not None else ("cost" if sel.cost_model else "frames")
    if sel.points and sel.cost_model and regions is None:
        budget_unit = "points"
    manifest = {
        "round": k,
        "strategy": strategy,
        "unit": sel.unit,
        "annotation": sel.annotation,
        "budget": sel.budget,
        "budget_unit": budget_unit,
        "cost_model": sel.cost_model,
        "per_scene_cap": sel.per_scene_cap,
        "pool_size": pool_size,
        "already_labelled": n_labelled,
        "spent": spent,
    }
    if regions is not None:
        manifest |= {
            "region_size": regions.size,
            "grid_shape": list(regions.shape),
            "tiles_per_side": list(regions.per_side),
            "max_tiles_per_frame": sel.max_tiles_per_frame,
            "tiles_total": sum(len(p.tiles) for p in picks),
            "voxels_total": spent,
        }
    if sel.points:
        manifest |= {
            "box_points": sel.box_points,
            "points_total": sum(r["points"] for r in rows),
            "boxes_total": sum(r["boxes"] for r in rows),
            "deliver": f"<scene>/<token>/{POINTS_FILE} (one uint8 nuScenes-lidarseg class index per point of the "
            f"keyframe LIDAR_TOP sweep, in its order; 0 = no class) and <scene>/<token>/{BOXES_FILE} "
            f"(a JSON list of sample_annotation-form boxes: translation, size, rotation, "
            f"category_name; global frame)"
            + ("; region rows: the points and boxes in the tiles" if regions is not None else ""),
        }
    manifest |= {"recipe_digest": recipe_digest, "created": timestamp(), "selected": rows}
    if deliver_to is not None:  # where `autolabel run` waits for the delivery (the oracle writes its own)
        manifest["deliver_to"] = str(deliver_to)
    text = json.dumps(manifest, indent=1)
    atomic_write(folder / MANIFEST, lambda fh: fh.write(text.encode()))
    out = io.StringIO()
    if rows:
        flat = [
            {
                **r,
                "tiles": ";".join(str(t["index"]) for t in r["tiles"]),
                "tiles_labelled_before": ";".join(map(str, r["tiles_labelled_before"])),
            }
            if "tiles" in r
            else r
            for r in rows
        ]
        w = csv.DictWriter(out, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)
    atomic_write(folder / "manifest.csv", lambda fh: fh.write(out.getvalue().encode()))
    _write_page(frames, k, folder, manifest, store)
    return folder / MANIFEST


def _point_rows(rows: list[dict], picks: list[Pick], regions: bool) -> None:
    """selection.annotation points: each row's points and boxes to label (its tiles' with regions)."""
    for row, p in zip(rows, picks):
        pc = p.candidate.point_cost
        if pc is None:
            raise ValueError(
                f"write_manifest: candidate {p.candidate.token} has no point costs (score the pool with "
                f"selection.annotation points)"
            )
        if regions:
            for tile in row["tiles"]:
                tile["points"], tile["boxes"] = pc.tiles_cost([tile["index"]])
            row["points"], row["boxes"] = pc.tiles_cost(sorted(p.tiles))
        else:
            row["points"], row["boxes"] = pc.points, pc.boxes
        row["boxes_from"] = pc.boxes_from


def _write_page(frames: NuScenesFrames, k: int, folder: Path, manifest: dict, store: LabelStore | None) -> None:
    """index.html: per pick, the six cameras and the current prediction's bird's-eye view."""
    arrays = store.round(k) if store is not None and k in store.rounds() else None
    blocks = []
    for r, row in enumerate(manifest["selected"]):
        frame = frames.frame(row["token"])
        thumbs = [
            np.asarray(Image.fromarray(c.image).resize((240, round(240 * c.image.shape[0] / c.image.shape[1]))))
            for c in frame.cameras
        ]
        strip = np.concatenate([np.concatenate(thumbs[:3], 1), np.concatenate(thumbs[3:], 1)], 0)
        _png(folder / f"{r:03d}_cameras.png", strip)
        bev = ""
        if arrays is not None:
            sem = read_frame(arrays, arrays.index(row["token"]))["semantics"]
            img = bev_image(sem)
            if "tiles" in row:  # region annotation: outline the requested tiles in white
                img = _outline(img, [t["bounds"] for t in row["tiles"]])
            _png(folder / f"{r:03d}_bev.png", np.kron(img, np.ones((2, 2, 1), np.uint8)))
            bev = f'<img src="{r:03d}_bev.png" alt="predicted occupancy, bird\'s-eye view">'
        scores = ", ".join(
            f"{key} {row[key]}"
            for key in ("uncertainty", "disagreement", "residual", "cost", "points", "boxes")
            if key in row
        )
        if "tiles" in row:
            scores += "; tiles to label (voxel index ranges x, y, z; half-open): " + "; ".join(
                f"{t['index']}: {t['bounds']}" for t in row["tiles"]
            )
            if row["tiles_labelled_before"]:
                scores += f"; tiles labelled in earlier rounds (not asked again): {row['tiles_labelled_before']}"
        blocks.append(
            f"<h3>{r + 1}. {html.escape(row['scene'])} / {row['token']}</h3><p>{html.escape(row['reason'])}; "
            f'{scores}</p><img src="{r:03d}_cameras.png" alt="six cameras"> {bev}'
        )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>round {k}: frames to annotate</title>"
        f"<style>body{{font-family:sans-serif;margin:2em}}img{{vertical-align:top;margin:4px}}</style>"
        f"<h1>Round {k}: {len(manifest['selected'])} frames to annotate</h1>"
        f"<p>strategy {manifest['strategy']}, budget {manifest['budget']} "
        f"({manifest['budget_unit']}), spent {manifest['spent']}, at most "
        f"{manifest['per_scene_cap']} per scene. Deliver "
        + (
            f"point labels and boxes: {html.escape(manifest['deliver'])} "
            if "deliver" in manifest
            else "Occ3D labels.npz files as gts/&lt;scene&gt;/&lt;token&gt;/labels.npz "
        )
        + (
            f"in <code>{html.escape(manifest['deliver_to'])}</code> and rerun <code>autolabel run RECIPE</code> (or "
            f"<code>autolabel ingest RECIPE --round {k} DIR</code> for another folder).</p>"
            if "deliver_to" in manifest
            else f"and run <code>autolabel ingest RECIPE --round {k} DIR</code>.</p>"
        )
        + "\n".join(blocks)
    )
    atomic_write(folder / "index.html", lambda fh: fh.write(page.encode()))


def _outline(img: np.ndarray, boxes: list) -> np.ndarray:
    """Draw voxel boxes' BEV outlines on a `bev_image` (row = X - 1 - x, column = Y - 1 - y)."""
    img = img.copy()
    xs, ys = img.shape[0], img.shape[1]
    for (x0, x1), (y0, y1), _ in boxes:
        r0, r1, c0, c1 = xs - x1, xs - 1 - x0, ys - y1, ys - 1 - y0
        img[r0 : r1 + 1, [c0, c1]] = 255
        img[[r0, r1], c0 : c1 + 1] = 255
    return img
