"""Ingesting an annotation round's delivery, and the simulated annotator that makes one.

Ingesting reads ``labels.npz`` files for manifest tokens from a folder (``<DIR>/gts/<scene>/<token>/``,
``<DIR>/<scene>/<token>/`` or ``<DIR>/<token>/``), validates them and stores them in the store's
``manual`` group; the next round's training adds 3D losses on those frames. Since issue 24 a frame may
instead be delivered as point labels and boxes (``<DIR>/<scene>/<token>/lidarseg.bin`` + ``boxes.json``,
autolabel.annotation.deliver), voxelized at ingest with the scene's LiDAR; the voxels they cover are the
frame's annotated mask (confidence 255), as for region labels.

With ``selection.unit: region`` (issue 21) a delivery may be partial (only the tiles' voxels labelled:
semantics 255, or an optional ``mask_annotated`` 0, elsewhere). Ingest checks that every voxel of every
requested tile carries a label and stores only the tiles: semantics 255 and masks 0 outside them, and the
manual group's ``confidence`` array as the annotated mask (255 = labelled by an annotator, 0 = not;
whole-frame labels are 255 everywhere, as before). A later round's tiles of a frame annotated before are merged
into its stored label (`merged`): the annotated voxels add up, and a delivery that disagrees with a voxel
annotated before is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from kernels.grid import GridSpec
from occnet.classes import IGNORE_ID

from ..annotation.deliver import delivered_tokens, find_points, manual_arrays, read_delivery, simulate_delivery
from ..data.nuscenes import NuScenesFrames
from ..data.occ3d import Occ3DLabels, read_labels, write_labels
from ..errors import DataError
from ..store.labels import LabelStore, read_frame
from ..store.manual import annotated_voxels
from .manifest import read_manifest
from .regions import bounds_mask


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
    return tile_arrays(labels, [tile["bounds"] for tile in row["tiles"]], shape)


def tile_arrays(labels: Occ3DLabels, bounds: list[list[list[int]]], shape: tuple) -> dict[str, np.ndarray]:
    """The manual-group arrays of a region-level label: `labels` (a frame's full Occ3D labels) kept only within
    the tiles' `bounds` ([[x0, x1], [y0, y1], [z0, z1]] each): semantics 255 and masks 0 outside, confidence 255
    marking the annotated voxels."""
    keep = bounds_mask(shape, bounds)
    return {
        "semantics": np.where(keep, labels.semantics, IGNORE_ID).astype(np.uint8),
        "confidence": (keep * 255).astype(np.uint8),
        "mask_camera": (labels.mask_camera.astype(bool) & keep).astype(np.uint8),
        "mask_lidar": (labels.mask_lidar.astype(bool) & keep).astype(np.uint8),
    }


def merged(old: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """A frame's manual-group arrays with a later delivery `new` added to the stored `old` (each annotated where
    its confidence is 255): the union of the annotated voxels, each keeping the labels of the delivery that
    annotated it. None where both annotated a voxel and disagree on it (a manual label is never overwritten).
    A second round's tiles of the same frame (selection.unit region) merge this way; a delivery repeated
    unchanged merges into `old` itself."""
    a, b = old["confidence"] == 255, new["confidence"] == 255
    both = a & b
    keys = ("semantics", "mask_camera", "mask_lidar")
    if any(not np.array_equal(old[key][both], new[key][both]) for key in keys):
        return None
    out = {key: np.where(b, new[key], old[key]).astype(old[key].dtype) for key in keys}
    out["confidence"] = np.where(a | b, 255, 0).astype(np.uint8)
    return out


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
        if done[i]:  # a later round's tiles of a frame labelled before: merged, never overwritten
            old = read_frame(manual, i)
            arrays = merged(old, arrays)
            if arrays is None:
                raise DataError(
                    f"frame {token} was already ingested with different labels; a manual label is not "
                    f"overwritten (delete it from {store.path}/manual to replace it)"
                )
            new = int((arrays["confidence"] == 255).sum() - (old["confidence"] == 255).sum())
            if new == 0:
                unchanged.append(token)
                continue
        else:
            new = int((arrays["confidence"] == 255).sum())
        manual.write(i, **arrays)
        added.append(token)
        voxels_added += new
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
