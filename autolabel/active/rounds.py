"""Annotation rounds: the selection manifest for annotators, and ingesting their Occ3D labels.

``<run>/round_K/select/``: manifest.json (round, strategy, budget, every pick with its scores, cost and
reason), manifest.csv (the same picks, one row each), index.html with PNGs of each picked frame's six
cameras and the model's current prediction (bird's-eye view of the round's pseudo-labels).
Ingesting reads ``labels.npz`` files for manifest tokens from a folder (``<DIR>/gts/<scene>/<token>/``,
``<DIR>/<scene>/<token>/`` or ``<DIR>/<token>/``), validates them and stores them in the store's
``manual`` group; the next round's training adds 3D losses on those frames.
"""
from __future__ import annotations

import csv
import html
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from occnet.atomic import atomic_write
from occnet.classes import FREE_ID, colorize

from ..data.occ3d import read_labels
from ..dataset import open_frames
from ..errors import DataError
from ..recipe import Recipe
from ..store.labels import LabelStore, read_frame
from .select import Pick

SELECT_DIR = "select"


def manifest_path(recipe: Recipe, k: int) -> Path:
    return recipe.round_dir(k) / SELECT_DIR / "manifest.json"


def read_manifest(path: Path) -> dict:
    """A selection manifest; a damaged one is a DataError naming it (it is written atomically, so damage
    comes from outside: restore it, or rerun the round's selection)."""
    try:
        manifest = json.loads(Path(path).read_text())
        for row in manifest["selected"]:
            str(row["token"]), str(row["scene"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"selection manifest {path} is damaged ({type(exc).__name__}: {exc}); restore it or delete "
                        f"it and rerun the round's selection") from None
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


def write_manifest(recipe: Recipe, k: int, picks: list[Pick], strategy: str, pool_size: int, n_labelled: int,
                   store: LabelStore | None = None) -> Path:
    folder = recipe.round_dir(k) / SELECT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    sel = recipe.selection
    rows = [{"token": p.candidate.token, "scene": p.candidate.scene, **{key: round(v, 6) for key, v in p.candidate.scores.items()},
             "cost": round(p.candidate.cost, 4), "reason": p.reason} for p in picks]
    manifest = {"round": k, "strategy": strategy, "budget": sel.budget, "cost_model": sel.cost_model,
                "per_scene_cap": sel.per_scene_cap, "pool_size": pool_size, "already_labelled": n_labelled,
                "spent": round(sum(p.candidate.cost if sel.cost_model else 1.0 for p in picks), 4),
                "recipe_digest": recipe.digest(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "selected": rows}
    if recipe.rounds.annotator == "folder":  # where `autolabel run` waits for the delivery (the oracle writes its own)
        manifest["deliver_to"] = str(recipe.delivery_dir(k))
    text = json.dumps(manifest, indent=1)
    atomic_write(folder / "manifest.json", lambda fh: fh.write(text.encode()))
    out = io.StringIO()
    if rows:
        w = csv.DictWriter(out, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write(folder / "manifest.csv", lambda fh: fh.write(out.getvalue().encode()))
    _write_page(recipe, k, folder, manifest, store)
    return folder / "manifest.json"


def _write_page(recipe: Recipe, k: int, folder: Path, manifest: dict, store: LabelStore | None) -> None:
    """index.html: per pick, the six cameras and the current prediction's bird's-eye view."""
    frames = open_frames(recipe, "train", load_images=True, load_gt=False)
    arrays = store.round(k) if store is not None and k in store.rounds() else None
    blocks = []
    for r, row in enumerate(manifest["selected"]):
        frame = frames.frame(row["token"])
        thumbs = [np.asarray(Image.fromarray(c.image).resize((240, round(240 * c.image.shape[0] / c.image.shape[1]))))
                  for c in frame.cameras]
        strip = np.concatenate([np.concatenate(thumbs[:3], 1), np.concatenate(thumbs[3:], 1)], 0)
        _png(folder / f"{r:03d}_cameras.png", strip)
        bev = ""
        if arrays is not None:
            sem = read_frame(arrays, arrays.index(row["token"]))["semantics"]
            _png(folder / f"{r:03d}_bev.png", np.kron(bev_image(sem), np.ones((2, 2, 1), np.uint8)))
            bev = f'<img src="{r:03d}_bev.png" alt="predicted occupancy, bird\'s-eye view">'
        scores = ", ".join(f"{key} {row[key]}" for key in ("uncertainty", "disagreement", "residual", "cost") if key in row)
        blocks.append(f"<h3>{r + 1}. {html.escape(row['scene'])} / {row['token']}</h3><p>{html.escape(row['reason'])}; "
                      f"{scores}</p><img src=\"{r:03d}_cameras.png\" alt=\"six cameras\"> {bev}")
    page = (f"<!doctype html><meta charset='utf-8'><title>round {k}: frames to annotate</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}img{{vertical-align:top;margin:4px}}</style>"
            f"<h1>Round {k}: {len(manifest['selected'])} frames to annotate</h1>"
            f"<p>strategy {manifest['strategy']}, budget {manifest['budget']} "
            f"({'cost units' if manifest['cost_model'] else 'frames'}), spent {manifest['spent']}, at most "
            f"{manifest['per_scene_cap']} per scene. Deliver Occ3D labels.npz files as gts/&lt;scene&gt;/&lt;token&gt;/labels.npz "
            + (f"in <code>{html.escape(manifest['deliver_to'])}</code> and rerun <code>autolabel run RECIPE</code> (or "
               f"<code>autolabel ingest RECIPE --round {k} DIR</code> for another folder).</p>" if "deliver_to" in manifest else
               f"and run <code>autolabel ingest RECIPE --round {k} DIR</code>.</p>") + "\n".join(blocks))
    atomic_write(folder / "index.html", lambda fh: fh.write(page.encode()))


def _find(folder: Path, scene: str, token: str) -> Path | None:
    for p in (folder / "gts" / scene / token / "labels.npz", folder / scene / token / "labels.npz",
              folder / token / "labels.npz"):
        if p.is_file():
            return p
    return None


def ingest(recipe: Recipe, k: int, folder: str | Path) -> dict:
    """Store the manifest's annotated frames in the manual group. Returns counts (added, unchanged, missing)."""
    folder = Path(folder)
    mpath = manifest_path(recipe, k)
    if not mpath.is_file():
        raise DataError(f"no selection manifest {mpath}; run `autolabel select --round {k}` first")
    manifest = read_manifest(mpath)
    wanted = {row["token"]: row["scene"] for row in manifest["selected"]}
    if not folder.is_dir():
        raise DataError(f"{folder}: annotation folder not found")
    for p in folder.rglob("labels.npz"):
        if p.parent.name not in wanted:
            raise DataError(f"{p}: token {p.parent.name} is not in the round {k} manifest {mpath}")
    grid = recipe.network.grid
    frames = open_frames(recipe, "train", load_images=False, load_gt=False)
    store = LabelStore(recipe.store_path, grid, create=True)
    manual = store.manual(frames.tokens, [frames.scene_of(t) for t in frames.tokens], create=True)
    added, unchanged, missing = [], [], []
    labels = {}
    for token, scene in wanted.items():
        path = _find(folder, scene, token)
        if path is None:
            missing.append(token)
            continue
        labels[token] = read_labels(path, grid)  # shape, dtype, class range, masks: DataError naming the file
        if not labels[token].mask_camera.any():
            raise DataError(f"{path}: mask_camera is empty; the annotation must mark the voxels it covers")
    done = manual.done()
    for token, lab in labels.items():
        i = manual.index(token)
        arrays = {"semantics": lab.semantics, "confidence": np.full(grid.shape, 255, np.uint8),
                  "mask_camera": lab.mask_camera, "mask_lidar": lab.mask_lidar}
        if done[i]:
            old = read_frame(manual, i)
            if all(np.array_equal(old[key], arrays[key]) for key in ("semantics", "mask_camera", "mask_lidar")):
                unchanged.append(token)
                continue
            raise DataError(f"frame {token} was already ingested with different labels; a manual label is not "
                            f"overwritten (delete it from {store.path}/manual to replace it)")
        manual.write(i, **arrays)
        added.append(token)
    return {"added": added, "unchanged": unchanged, "missing": missing, "manual_total": int(manual.done().sum())}


def oracle_annotate(recipe: Recipe, k: int, gts_root: str | Path, out: str | Path) -> int:
    """Simulated annotator: copies the ground truth of the manifest's tokens from ``<gts_root>/gts/`` into
    ``<out>/gts/`` (what a labelling vendor would deliver). Returns the number of files delivered."""
    import shutil

    manifest = read_manifest(manifest_path(recipe, k))
    n = 0
    for row in manifest["selected"]:
        src = Path(gts_root) / "gts" / row["scene"] / row["token"] / "labels.npz"
        if not src.is_file():
            raise DataError(f"oracle: no ground truth {src}")
        dst = Path(out) / "gts" / row["scene"] / row["token"] / "labels.npz"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        n += 1
    return n
