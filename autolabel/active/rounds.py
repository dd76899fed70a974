"""Annotation rounds: the selection manifest for annotators, and ingesting their Occ3D labels.

``<run>/round_K/select/``: manifest.json (round, strategy, budget, every pick with its scores, cost and
reason), manifest.csv (the same picks, one row each), index.html with PNGs of each picked frame's six
cameras and the model's current prediction (bird's-eye view of the round's pseudo-labels).
Ingesting reads ``labels.npz`` files for manifest tokens from a folder (``<DIR>/gts/<scene>/<token>/``,
``<DIR>/<scene>/<token>/`` or ``<DIR>/<token>/``), validates them and stores them in the store's
``manual`` group; the next round's training adds 3D losses on those frames. Since issue 24 a frame may
instead be delivered as point labels and boxes (``<DIR>/<scene>/<token>/lidarseg.bin`` + ``boxes.json``,
autolabel.annotation.deliver), voxelized at ingest with the scene's LiDAR; the voxels they cover are the
frame's annotated mask (confidence 255), as for region labels. ``selection.annotation: points`` asks for
them in the manifest (points and boxes per frame and tile) and makes the simulated annotator deliver them.

With ``selection.unit: region`` (issue 21) each manifest row lists the frame's tiles (index and voxel
bounds) and their voxels; a delivery may be partial (only the tiles' voxels labelled: semantics 255, or an
optional ``mask_annotated`` 0, elsewhere). Ingest checks that every voxel of every requested tile carries a
label and stores only the tiles: semantics 255 and masks 0 outside them, and the manual group's
``confidence`` array as the annotated mask (255 = labelled by an annotator, 0 = not; whole-frame labels are
255 everywhere, as before).
"""

from __future__ import annotations

import csv
import html
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from kernels.grid import GridSpec
from occnet.atomic import atomic_write
from occnet.classes import FREE_ID, IGNORE_ID, colorize

from ..data.occ3d import Occ3DLabels, read_labels, write_labels
from ..data.nuscenes import NuScenesFrames
from ..errors import DataError
from ..provenance import timestamp
from ..store.labels import LabelStore, read_frame
from ..store.manual import annotated_voxels
from .config import SelectionConfig
from ..annotation.deliver import (
    BOXES_FILE,
    POINTS_FILE,
    delivered_tokens,
    find_points,
    manual_arrays,
    read_delivery,
    simulate_delivery,
)
from .regions import RegionGrid, bounds_mask
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
        flat = [{**r, "tiles": ";".join(str(t["index"]) for t in r["tiles"])} if "tiles" in r else r for r in rows]
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


def _find(folder: Path, scene: str, token: str) -> Path | None:
    for p in (
        folder / "gts" / scene / token / "labels.npz",
        folder / scene / token / "labels.npz",
        folder / token / "labels.npz",
    ):
        if p.is_file():
            return p
    return None


def _tile_labels(labels: Occ3DLabels, row: dict, path: Path, shape: tuple) -> dict[str, np.ndarray]:
    """A region row's delivery as manual-group arrays: every voxel of every requested tile must carry a label
    (semantics not 255 and, where the file has one, mask_annotated 1), else a DataError naming the frame and
    the tile; only the tiles are kept (semantics 255, masks 0 outside), and confidence 255 marks them."""
    labelled = labels.semantics != IGNORE_ID
    if labels.mask_annotated is not None:
        labelled &= labels.mask_annotated.astype(bool)
    for tile in row["tiles"]:
        (x0, x1), (y0, y1), (z0, z1) = tile["bounds"]
        box = labelled[x0:x1, y0:y1, z0:z1]
        if not box.all():
            raise DataError(
                f"{path}: frame {row['token']} tile {tile['index']} (voxels x {x0}:{x1}, y {y0}:{y1}, "
                f"z {z0}:{z1}) is not fully labelled: {int(box.size - box.sum())} of {box.size} voxels have "
                f"no label (semantics 255 or mask_annotated 0); deliver every voxel of the requested tiles"
            )
    keep = bounds_mask(shape, [tile["bounds"] for tile in row["tiles"]])
    return {
        "semantics": np.where(keep, labels.semantics, IGNORE_ID).astype(np.uint8),
        "confidence": (keep * 255).astype(np.uint8),
        "mask_camera": (labels.mask_camera.astype(bool) & keep).astype(np.uint8),
        "mask_lidar": (labels.mask_lidar.astype(bool) & keep).astype(np.uint8),
    }


def ingest(
    mpath: Path,
    k: int,
    folder: str | Path,
    frames: NuScenesFrames,
    store_path: Path,
    grid: GridSpec,
    image_size: tuple[int, int],
) -> dict:
    """Store the annotated frames of round k's manifest (at `mpath`), delivered in `folder`, in the manual group
    of the store at `store_path` (covering the pool `frames`; point labels are voxelized with their LiDAR, with
    camera masks at the network input size `image_size`). Returns the tokens added, unchanged and missing, the
    voxels added (labelled voxels: the tiles of region rows, the whole grid for a frame) and the manual group's
    totals (frames, labelled voxels)."""
    folder = Path(folder)
    if not mpath.is_file():
        raise DataError(f"no selection manifest {mpath}; run `autolabel select --round {k}` first")
    manifest = read_manifest(mpath)
    rows = {row["token"]: row for row in manifest["selected"]}
    if not folder.is_dir():
        raise DataError(f"{folder}: annotation folder not found")
    for p in folder.rglob("labels.npz"):
        if p.parent.name not in rows:
            raise DataError(f"{p}: token {p.parent.name} is not in the round {k} manifest {mpath}")
    for token in sorted(delivered_tokens(folder) - set(rows)):
        raise DataError(f"{folder}: point labels for token {token}, which is not in the round {k} manifest {mpath}")
    store = LabelStore(store_path, grid, create=True)
    manual = store.manual(frames.tokens, [frames.scene_of(t) for t in frames.tokens], create=True)
    added, unchanged, missing = [], [], []
    arrays_of = {}
    for token, row in rows.items():
        path = _find(folder, row["scene"], token)
        points = find_points(folder, row["scene"], token)
        if path is not None and points is not None:
            raise DataError(
                f"frame {token}: delivered twice, as Occ3D voxels ({path}) and as point labels ({points}); keep one"
            )
        if points is not None:  # issue 24: point labels + boxes, voxelized with the scene's LiDAR
            raw, boxes = read_delivery(frames, points, token)
            keep = bounds_mask(grid.shape, [t["bounds"] for t in row["tiles"]]) if "tiles" in row else None
            arrays_of[token] = manual_arrays(frames, token, raw, boxes, grid, image_size, keep=keep)
            if not arrays_of[token]["mask_camera"].any():
                raise DataError(
                    f"{points}: the point labels and boxes cover no voxel the cameras see"
                    + (" within the requested tiles" if keep is not None else "")
                )
            continue
        if path is None:
            missing.append(token)
            continue
        lab = read_labels(path, grid)  # shape, dtype, class range, masks: DataError naming the file
        if "tiles" in row:
            arrays_of[token] = _tile_labels(lab, row, path, grid.shape)
            if not arrays_of[token]["mask_camera"].any():
                raise DataError(
                    f"{path}: mask_camera is empty within the requested tiles; the annotation must mark "
                    f"the voxels it covers"
                )
            continue
        if not lab.mask_camera.any():
            raise DataError(f"{path}: mask_camera is empty; the annotation must mark the voxels it covers")
        arrays_of[token] = {
            "semantics": lab.semantics,
            "confidence": np.full(grid.shape, 255, np.uint8),
            "mask_camera": lab.mask_camera,
            "mask_lidar": lab.mask_lidar,
        }
    done = manual.done()
    voxels_added = 0
    for token, arrays in arrays_of.items():
        i = manual.index(token)
        if done[i]:
            old = read_frame(manual, i)
            if all(
                np.array_equal(old[key], arrays[key])
                for key in ("semantics", "confidence", "mask_camera", "mask_lidar")
            ):
                unchanged.append(token)
                continue
            raise DataError(
                f"frame {token} was already ingested with different labels; a manual label is not "
                f"overwritten (delete it from {store.path}/manual to replace it)"
            )
        manual.write(i, **arrays)
        added.append(token)
        voxels_added += int((arrays["confidence"] == 255).sum())
    done = manual.done()
    return {
        "added": added,
        "unchanged": unchanged,
        "missing": missing,
        "manual_total": int(done.sum()),
        "voxels_added": voxels_added,
        "manual_voxels": sum(annotated_voxels(manual, int(i)) for i in np.flatnonzero(done)),
    }


def oracle_annotate(mpath: Path, gts_root: str | Path, out: str | Path, grid: GridSpec, frames: NuScenesFrames) -> int:
    """Simulated annotator (synthetic worlds only: it copies ground truth), delivering what the manifest asks
    for. A points manifest (selection.annotation points, issue 24): each frame's exact lidarseg point labels
    and sample_annotation boxes from the world (`<out>/<scene>/<token>/lidarseg.bin, boxes.json`; the tiles'
    points and boxes for region rows). A voxels manifest (the voxel oracle): the ground truth of the
    manifest's tokens from ``<gts_root>/gts/`` into ``<out>/gts/`` (what a labelling vendor would deliver);
    for a region manifest only the requested tiles: semantics 255 and masks 0 elsewhere, with
    ``mask_annotated`` marking the tiles; `frames`: the pool (the points oracle reads its LiDAR and boxes).
    Returns the number of frames delivered."""
    manifest = read_manifest(mpath)
    if manifest.get("annotation") == "points":
        for row in manifest["selected"]:
            simulate_delivery(
                frames,
                row["token"],
                Path(out) / row["scene"] / row["token"],
                grid,
                [t["bounds"] for t in row["tiles"]] if "tiles" in row else None,
            )
        return len(manifest["selected"])
    n = 0
    for row in manifest["selected"]:
        src = Path(gts_root) / "gts" / row["scene"] / row["token"] / "labels.npz"
        if not src.is_file():
            raise DataError(f"oracle: no ground truth {src}")
        dst = Path(out) / "gts" / row["scene"] / row["token"] / "labels.npz"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if "tiles" in row:
            gt = read_labels(src, grid)
            keep = bounds_mask(grid.shape, [t["bounds"] for t in row["tiles"]])
            write_labels(
                dst,
                Occ3DLabels(
                    np.where(keep, gt.semantics, IGNORE_ID).astype(np.uint8),
                    (gt.mask_lidar.astype(bool) & keep).astype(np.uint8),
                    (gt.mask_camera.astype(bool) & keep).astype(np.uint8),
                    mask_annotated=keep.astype(np.uint8),
                ),
                grid,
            )
        else:
            shutil.copyfile(src, dst)
        n += 1
    return n
