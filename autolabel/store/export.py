"""Reading a round of the pseudo-label store: thresholds, Occ3D export, inspection, evaluation."""

from __future__ import annotations

import json
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from occnet.atomic import atomic_write
from occnet.classes import FREE_ID, IGNORE_ID, NUM_CLASSES, OCC3D_CLASS_NAMES
from occnet.metrics import OccupancyMetric

from ..data.occ3d import Occ3DLabels, carried_kept, labels_path, read_labels, write_labels
from ..errors import DataError
from .confidence import LEVELS, class_thresholds, level_histogram
from .frame_arrays import FrameArrays
from .labels import ARRAYS, HISTOGRAM, LabelStore, read_frame


def export_workers() -> int:
    """Threads that compute histograms and build and write the labels.npz files: zlib, file writes, bincount
    and numpy's element-wise operations release the GIL, so they overlap each other and the reading of the
    next frames (zarr decodes in its own threads)."""
    return max(1, min(4, os.cpu_count() or 1))


def threaded(fn: Callable, items: Iterable[tuple], workers: int | None = None) -> Iterator:
    """fn(*item) for each item, in order, computed by `workers` threads (default `export_workers()`) at most
    2 x workers items ahead of the caller (bounded memory). On an error, items not yet started are dropped."""
    workers = workers or export_workers()
    pending: deque = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="autolabel-store")
    try:
        for item in items:
            pending.append(pool.submit(fn, *item))
            while len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def round_histogram(arrays: FrameArrays, progress: bool = False, workers: int | None = None) -> np.ndarray:
    """(NUM_CLASSES, 256) confidence-level counts per class over the round's finished frames: the sum of the
    frames' stored histograms (`store.labels.HISTOGRAM`, a shard at a time), or, for a round written without
    them, counted from its semantics and confidence (read a block of frames at a time, counted by `workers`
    threads)."""
    hist = np.zeros((NUM_CLASSES, LEVELS), np.int64)
    done = arrays.done()
    if HISTOGRAM.name in arrays.specs:
        S = arrays.shard_frames
        blocks = [(a, min(a + S, len(arrays))) for a in range(0, len(arrays), S) if done[a : a + S].any()]
        for a, b in tqdm(blocks, desc="confidence histogram", disable=not progress):
            stored = arrays.read_frames(a, b, (HISTOGRAM.name,), done)[HISTOGRAM.name]
            hist += stored[done[a:b]].sum(0, dtype=np.int64)
        return hist
    frames = arrays.iter_frames(np.flatnonzero(done), ("semantics", "confidence"), done=done)
    counts = threaded(level_histogram, ((f["semantics"], f["confidence"]) for _, f in frames), workers)
    for h in tqdm(counts, total=int(done.sum()), desc="confidence histogram", disable=not progress):
        hist += h
    return hist


def check_drop_quantile(q: float) -> None:
    """The share of each class's voxels to drop: 1 or more would drop everything (and exit 0 with an
    empty export), a negative share means nothing."""
    if not 0 <= q < 1:
        raise DataError(
            f"drop quantile must be in [0, 1) (the share of each class's least confident voxels left out), got {q}"
        )


def thresholds_for(arrays: FrameArrays, drop_quantile: float, workers: int | None = None) -> np.ndarray:
    """(NUM_CLASSES,) per-class confidence-level thresholds over the whole round."""
    check_drop_quantile(drop_quantile)
    return class_thresholds(torch.from_numpy(round_histogram(arrays, workers=workers)), drop_quantile).numpy()


def as_occ3d(semantics: np.ndarray) -> np.ndarray:
    """A store's semantics as Occ3D files hold them: a voxel the labeller left unlabelled (255: fusion's
    unobserved voxels) is free there, and never confident (confident_mask), so it is masked out."""
    return np.where(semantics == IGNORE_ID, FREE_ID, semantics).astype(np.uint8, copy=False)


def level_lut(thresholds: np.ndarray) -> np.ndarray:
    """(256,) uint16: the lowest kept confidence level for each semantics value, as `store.confidence.threshold`
    applies the thresholds (ids past the table clamp to its last class; 255, unlabelled, is never kept)."""
    thresholds = np.asarray(thresholds).astype(np.uint16)
    lut = np.full(256, thresholds[NUM_CLASSES - 1], np.uint16)
    lut[:NUM_CLASSES] = thresholds
    lut[IGNORE_ID] = LEVELS
    return lut


def kept_mask(semantics: np.ndarray, confidence: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """bool: voxels whose confidence clears their class's threshold (unlabelled voxels never do)."""
    return confidence >= np.take(level_lut(thresholds), semantics)  # take: twice as fast as lut[semantics]


def thresholded(frame: dict, thresholds: np.ndarray | None) -> np.ndarray:
    """A frame's semantics with voxels under their class threshold set to 255 (None: all kept)."""
    if thresholds is None:
        return frame["semantics"]
    sem = frame["semantics"]
    return np.where(kept_mask(sem, frame["confidence"], thresholds), sem, np.uint8(IGNORE_ID))


# How an export represents the voxels the confidence thresholds drop (issue 19), also written into export.json.
DROPPED_VOXELS = (
    "semantics keep the predicted class (ids 0..17, as in Occ3D-nuScenes, whose training code indexes "
    "by class); a voxel under its class threshold is left out through the masks: mask_camera and "
    "mask_lidar are 0 there, and mask_confident (1 = kept) marks the kept voxels over the whole grid"
)


# Which frames hold what (issue 21), also written into export.json.
LABEL_SOURCE = (
    "frames with ingested manual labels (manual_tokens) hold the annotators' labels as ingested "
    "(label_source 'manual' in their labels.npz, mask_confident all 1); every other frame holds the "
    "round's pseudo-labels (label_source 'pseudo'); a frame with region-level manual labels (region_tokens, "
    "label_source 'region') holds the annotators' labels in its annotated tiles (mask_annotated 1, "
    "mask_confident 1 there) and the round's pseudo-labels elsewhere, under what the scene's other annotated "
    "keyframes carry to the rest of the frame where the run carries manual labels (mask_annotated 1 there too); "
    "where the run carries manual labels "
    "(rounds.export_propagate), another keyframe of an annotated scene (carried_tokens, label_source 'carried') holds "
    "the classes carried from the scene's annotated keyframes in the voxels they reach (mask_annotated 1, "
    "mask_confident 1 there; the masks stay the frame's own) and the round's pseudo-labels elsewhere; "
    "kept_in_mask_camera counts the pseudo-labelled and carried frames"
)


def confident_mask(frame: dict, thresholds: np.ndarray | None) -> np.ndarray:
    """(X, Y, Z) bool: voxels whose confidence clears their class's threshold (every labelled voxel for None)."""
    sem = frame["semantics"]
    if thresholds is None:
        return sem != IGNORE_ID
    return kept_mask(sem, frame["confidence"], thresholds)


def _export_frame(
    f: dict,
    m: dict | None,
    thr: np.ndarray | None,
    grid,
    path: Path,
    token: str,
    carry: Callable[[str], Occ3DLabels | None] | None = None,
) -> tuple[str, str, int, int]:
    """Write one frame's labels.npz from its round arrays `f`, its manual labels `m` (None: pseudo-labels
    only) and, where `m` is absent or region-level, what `carry(token)` carries to it (a partial label, or None;
    computed here, in the export's worker threads); returns (label source, token, kept and total voxels of
    mask_camera)."""
    if m is not None and (m["confidence"] == 255).all():
        labels = Occ3DLabels(
            m["semantics"], m["mask_lidar"], m["mask_camera"], np.ones(grid.shape, np.uint8), source="manual"
        )
        write_labels(path, labels, grid)
        return "manual", token, 0, 0
    c = carry(token) if carry is not None else None  # computed here, in the export's worker threads
    sem = as_occ3d(f["semantics"])  # the pseudo-labels as Occ3D files hold them (fusion's unobserved 255 is free)
    if m is not None:  # region-level labels (issue 21): the annotated tiles over the pseudo-labels
        ann = m["confidence"] == 255
        conf = confident_mask(f, thr) | ann
        # outside the tiles: what the scene's other annotated keyframes carry there, else the pseudo-labels
        fill = np.zeros_like(ann)
        if c is not None:
            fill = carried_kept(c.semantics, c.mask_annotated.astype(bool) & ~ann, sem)
            sem = np.where(fill, c.semantics, sem)
        conf |= fill
        pick = {key: np.where(ann, m[key], f[key]) for key in ("mask_camera", "mask_lidar")}
        pick["semantics"] = np.where(ann, m["semantics"], sem)
        labels = Occ3DLabels(
            pick["semantics"],
            (pick["mask_lidar"].astype(bool) & conf).astype(np.uint8),
            (pick["mask_camera"].astype(bool) & conf).astype(np.uint8),
            conf.astype(np.uint8),
            source="region",
            mask_annotated=(ann | fill).astype(np.uint8),
        )
        write_labels(path, labels, grid)
        return "region", token, 0, 0
    conf = confident_mask(f, thr)
    carried = None if c is None else carried_kept(c.semantics, c.mask_annotated.astype(bool), sem)
    if carried is not None:
        # carried free space only makes the pseudo-labels' free voxels confident (`carried_kept`). Carried classes
        # replace the pseudo-labels' and are kept whatever the thresholds say (99.7% right: BENCHMARKS.md)
        sem = np.where(carried, c.semantics, sem)
        conf = conf | carried
    cam = f["mask_camera"].astype(bool)
    cam_kept = cam & conf
    labels = Occ3DLabels(
        sem,
        (f["mask_lidar"].astype(bool) & conf).view(np.uint8),
        cam_kept.view(np.uint8),
        conf.view(np.uint8),
        source="pseudo" if carried is None else "carried",
        mask_annotated=None if carried is None else carried.view(np.uint8),
    )
    write_labels(path, labels, grid)
    return labels.source, token, int(np.count_nonzero(cam_kept)), int(np.count_nonzero(cam))


def export_occ3d(
    store: LabelStore,
    k: int,
    out: str | Path,
    drop_quantile: float | None,
    progress: bool = True,
    workers: int | None = None,
    carried: Mapping[str, Occ3DLabels] | None = None,
) -> dict:
    """Write round k as ``OUT/gts/<scene>/<token>/labels.npz``; returns the export summary (also OUT/export.json).

    A frame with ingested manual labels (the store's ``manual`` group) is written from those: the
    annotator's semantics and masks, ``mask_confident`` all 1, ``label_source`` "manual". Every other frame
    holds the round's pseudo-labels (``label_source`` "pseudo"): the store's ``semantics`` unchanged (no
    255: a dropped voxel keeps its class), the masks with the dropped voxels cleared (``mask_camera &
    mask_confident``, ``mask_lidar & mask_confident``) and ``mask_confident`` itself, so that Occ3D training
    code, which loads ``semantics`` and a mask and indexes by class, leaves dropped voxels out without
    knowing about thresholds. With ``drop_quantile=None`` nothing is dropped (mask_confident is all 1).
    `carried` (token -> partial labels, `autolabel.active.propagate.PropagatedLabels`, or None): a frame with
    no manual labels of its own that it reaches holds the carried classes over its pseudo-labels (``label_source``
    "carried", ``mask_annotated`` the carried voxels, which count as confident; the masks stay the frame's); a
    frame with region-level labels holds them outside its tiles (``mask_annotated`` the tiles and those voxels).
    export.json lists the manual and carried frames; ``kept_in_mask_camera`` is over the pseudo-labelled and
    carried frames.

    The round is read a block of frames at a time (`FrameArrays.iter_frames`), and `workers` threads
    (`threaded`) build and write the files a bounded number of frames behind the reading.
    """
    arrays = store.round(k)
    arrays.check_complete()  # a missing chunk stops the export before its first file, not halfway
    manual = store.manual()
    manual_done = manual.done() if manual is not None else None
    if manual is not None:
        manual.check_complete()
    scenes = store.scene_of(arrays)
    thr = thresholds_for(arrays, drop_quantile, workers) if drop_quantile is not None else None
    done = arrays.done()
    kept = total = 0
    manual_tokens, region_tokens, carried_tokens = [], [], []
    carry = carried.get if carried is not None else None  # None where nothing reaches a frame

    def jobs():
        for i, f in arrays.iter_frames(np.flatnonzero(done), ARRAYS, done=done):
            token = arrays.tokens[i]
            j = manual.index(token) if manual is not None and manual.has(token) else None
            m = read_frame(manual, j) if j is not None and manual_done[j] else None
            yield f, m, thr, store.grid, labels_path(out, scenes[token], token), token, carry

    written = threaded(_export_frame, jobs(), workers)
    for source, token, n_kept, n_total in tqdm(
        written, total=int(done.sum()), desc=f"export round {k}", disable=not progress
    ):
        kept, total = kept + n_kept, total + n_total
        if source == "manual":
            manual_tokens.append(token)
        elif source == "region":
            region_tokens.append(token)
        elif source == "carried":
            carried_tokens.append(token)
    summary = {
        "store": str(store.path),
        "round": k,
        "frames": int(done.sum()),
        "frames_in_round": len(arrays),
        "frames_manual": len(manual_tokens),
        "frames_region": len(region_tokens),
        "frames_carried": len(carried_tokens),
        "frames_pseudo": int(done.sum()) - len(manual_tokens) - len(region_tokens) - len(carried_tokens),
        "manual_tokens": manual_tokens,
        "region_tokens": region_tokens,
        "carried_tokens": carried_tokens,
        "label_source": LABEL_SOURCE,
        "drop_quantile": drop_quantile,
        "thresholds": None if thr is None else thr.tolist(),
        "kept_in_mask_camera": kept / max(total, 1),
        "dropped_voxels": DROPPED_VOXELS,
        "provenance": {key: v for key, v in arrays.attrs.items() if key not in ("scenes", "recipe")},
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=1)
    atomic_write(Path(out) / "export.json", lambda fh: fh.write(text.encode()))
    return summary


def inspect_store(store: LabelStore) -> str:
    """One-screen summary: rounds, frames, class histogram within mask_camera, confidence, provenance."""
    lines = [f"store {store.path}  grid {store.grid.shape} voxel {store.grid.voxel_size[0]} m"]
    if not store.rounds():
        lines.append("no rounds yet")
    for k in store.rounds():
        arrays = store.round(k)
        done = arrays.done()
        a = arrays.attrs
        lines.append(
            f"\nround {k}: {int(done.sum())}/{len(arrays)} frames done; weights {a.get('weights')} "
            f"at step {a.get('teacher_step')}; checkpoint {str(a.get('checkpoint_sha256'))[:12]}; "
            f"2D labels {a.get('supervision_provider')}; created {a.get('created')}"
        )
        counts = np.zeros(NUM_CLASSES + 1, np.int64)
        conf_sum = 0.0
        n = 0
        for i in np.flatnonzero(done):
            f = read_frame(arrays, int(i))
            cam = f["mask_camera"].astype(bool)
            s = f["semantics"][cam].astype(np.int64)
            counts += np.bincount(np.where(s == IGNORE_ID, NUM_CLASSES, s), minlength=NUM_CLASSES + 1)
            conf_sum += float(f["confidence"][cam].astype(np.float64).sum()) / 255
            n += int(cam.sum())
        if n:
            occupied = counts[:FREE_ID].sum()
            lines.append(
                f"  voxels in mask_camera: {n}, occupied {100 * occupied / n:.1f}%, mean confidence {conf_sum / n:.3f}"
            )
            share = [
                f"{OCC3D_CLASS_NAMES[c]} {100 * counts[c] / max(occupied, 1):.1f}%" for c in range(FREE_ID) if counts[c]
            ]
            lines.append("  occupied voxels by class: " + ", ".join(share))
    manual = store.manual()
    if manual is not None:
        lines.append(f"\nmanual 3D labels: {int(manual.done().sum())} frames")
    return "\n".join(lines)


def evaluate_round(
    store: LabelStore, k: int, gts_root: str | Path, quantiles: Sequence[float] = (), progress: bool = True
) -> dict:
    """Occ3D metric of round k against ``<gts_root>/gts/<scene>/<token>/labels.npz`` within the ground
    truth's mask_camera: of all labels, and for each drop quantile the mIoU of the voxels the per-class
    thresholds keep with their coverage (kept share of mask_camera): the precision / coverage trade-off."""
    for q in quantiles:
        check_drop_quantile(q)
    arrays = store.round(k)
    scenes = store.scene_of(arrays)
    hist = torch.from_numpy(round_histogram(arrays))
    thrs = [class_thresholds(hist, q).numpy() for q in quantiles]
    full = OccupancyMetric()
    kept_metrics = [OccupancyMetric() for _ in quantiles]
    kept = np.zeros(len(quantiles), np.int64)
    total = frames = 0
    for i in tqdm(np.flatnonzero(arrays.done()), desc=f"eval round {k}", disable=not progress):
        token = arrays.tokens[i]
        path = labels_path(gts_root, scenes[token], token)
        if not path.is_file():
            continue
        gt = read_labels(path, store.grid)
        f = read_frame(arrays, int(i))
        cam = gt.mask_camera.astype(bool)
        full.update(as_occ3d(f["semantics"]), gt.semantics, cam)
        total += int(cam.sum())
        for j, thr in enumerate(thrs):
            sem = thresholded(f, thr)
            keep = cam & (sem != IGNORE_ID)
            kept_metrics[j].update(np.where(keep, sem, 0), gt.semantics, keep)
            kept[j] += int(keep.sum())
        frames += 1
    if frames == 0:
        raise DataError(f"{gts_root}: no gts/<scene>/<token>/labels.npz for any frame of round {k}")
    curve = []
    for q, m, n in zip(quantiles, kept_metrics, kept):
        sc = m.compute()
        curve.append(
            {
                "drop_quantile": q,
                "coverage": float(n / max(total, 1)),
                "miou": sc.as_dict()["miou"],
                "geometric_iou": sc.as_dict()["geometric_iou"],
            }
        )
    return {"round": k, "frames": frames, "scores": full.compute(), "curve": curve}
