"""The per-round HTML report: what people look at to judge the labels.

One static page (``page.py`` writes the HTML): a summary table (mIoU, geometric IoU, kept share,
labelled frames), per-class IoU in the class colours, the colour legend; for a few validation (else
pool) frames, 3D and bird's-eye views of the predicted and the true occupancy side by side, and the six
cameras beside the rendered depth, the rendered semantics and the 2D supervision; the frames selected
for annotation with their scores and reasons; the budget curve across rounds. Every figure is a PNG
next to ``index.html``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch

from occnet.atomic import atomic_write
from occnet.classes import FREE_ID, IGNORE_ID, colorize
from occnet.inference import predict
from occnet.metrics import OccupancyMetric
from occnet.rays import image_rays, render

from kernels.grid import GridSpec
from occnet.config import RenderConfig

from ..active.manifest import bev_image
from ..network_input import FrameDataset
from . import page as P
from .figures import pyplot, save_figure


def _save(fig, path: Path) -> str:
    return save_figure(fig, path, dpi=100).name


def _depth_rgb(depth: np.ndarray, vmax: float) -> np.ndarray:
    import matplotlib

    rgb = matplotlib.colormaps["turbo"](np.clip(depth / vmax, 0, 1))[..., :3]
    return (np.where(depth[..., None] > 0, rgb, 0) * 255).astype(np.uint8)


def frame_figure(
    model, item: dict, grid: GridSpec, image_size: tuple[int, int], render_cfg: RenderConfig, device, path: Path
) -> str:
    """Rows per camera: image | rendered depth | rendered semantics | 2D supervision."""
    plt = pyplot()
    hw = tuple(image_size)
    b = {k: item[k][None].to(device) for k in ("images", "intrinsics", "cam2ego")}
    with torch.no_grad():
        out = model(b["images"], b["intrinsics"], b["cam2ego"])
        rays = image_rays(b["intrinsics"][0], b["cam2ego"][0], hw)
        r = render(out.density.float(), out.logits.float(), rays, grid, render_cfg)
    n = item["images"].shape[0]
    depth = r.depth.reshape(n, *hw).cpu().numpy()
    sem = r.probs.argmax(-1).reshape(n, *hw).cpu().numpy()
    sem = np.where(r.opacity.reshape(n, *hw).cpu().numpy() > 0.5, sem, IGNORE_ID)
    vmax = float(np.percentile(depth, 98)) or 1.0  # the frame's own depth range, so that structure shows
    fig, axes = plt.subplots(n, 4, figsize=(12, 1.9 * n * hw[0] / hw[1] * 4 / 3 + 0.6))
    for c in range(n):
        img = item["images"][c].permute(1, 2, 0).numpy()  # uint8 pixels
        panels = [
            img,
            _depth_rgb(depth[c], vmax),
            colorize(sem[c].astype(np.uint8)),
            colorize(item["semantics"][c].numpy()),
        ]
        for a, p, title in zip(axes[c], panels, ("camera", "rendered depth", "rendered semantics", "2D supervision")):
            a.imshow(p)
            a.set_xticks([])
            a.set_yticks([])
            if c == 0:
                a.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _scatter3d(ax, labels: np.ndarray, title: str) -> None:
    """Occupied voxels (not free, not 255) as coloured squares in a perspective view."""
    occ = np.argwhere((labels != FREE_ID) & (labels != IGNORE_ID))
    if len(occ) > 40000:  # matplotlib's 3D scatter slows down past this; a sample keeps the picture
        occ = occ[np.random.default_rng(0).choice(len(occ), 40000, replace=False)]
    colors = colorize(labels[tuple(occ.T)].astype(np.uint8)) / 255.0
    ax.scatter(occ[:, 0], occ[:, 1], occ[:, 2], c=colors, s=2.0, marker="s", depthshade=False, edgecolors="none")
    ax.set_xlim(0, labels.shape[0])
    ax.set_ylim(0, labels.shape[1])
    ax.set_zlim(0, labels.shape[2])
    ax.set_box_aspect((labels.shape[0], labels.shape[1], labels.shape[2] * 1.5), zoom=1.35)  # fill the panel
    ax.view_init(elev=38, azim=-150)  # from behind-left of the ego vehicle, looking forward
    if not len(occ):  # say so, rather than leave an empty panel that looks like a failed figure
        ax.text2D(0.5, 0.5, "no occupied voxel", transform=ax.transAxes, ha="center", fontsize=11, color="#666")
    ax.set_title(title, fontsize=11)
    ax.set_axis_off()


def occupancy_figure(pred: np.ndarray, gt: np.ndarray | None, path: Path) -> str:
    """3D perspective views (top row) and bird's-eye views (bottom row) of the predicted occupancy and,
    when there is ground truth, the true occupancy beside it, at the same angles."""
    plt = pyplot()
    panels = [("predicted", pred)] + ([("ground truth", gt)] if gt is not None else [])
    fig = plt.figure(figsize=(5.6 * len(panels), 9.0))
    grid = fig.add_gridspec(2, len(panels), height_ratios=(1.0, 0.9))
    for j, (name, labels) in enumerate(panels):
        _scatter3d(fig.add_subplot(grid[0, j], projection="3d"), labels, f"{name}, 3D")
        ax = fig.add_subplot(grid[1, j])
        ax.imshow(bev_image(labels))
        ax.set_title(f"{name}, bird's-eye (forward up)", fontsize=11)
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.96, bottom=0.01, wspace=0.04, hspace=0.08)
    return _save(fig, path)


def budget_figure(history: list[dict], path: Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    drawn = False
    for key, label in (("val_miou", "validation mIoU (network)"), ("pseudo_miou", "pseudo-label mIoU (pool)")):
        pts = [(h["labelled"], h[key]) for h in history if h.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", label=label)
            drawn = True
    ax.set_xlabel("frames with manual 3D labels")
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    else:  # real data without gts/: nothing to score (an empty legend would only warn)
        ax.text(
            0.5,
            0.5,
            "no ground truth (gts/): no mIoU\nscore an export with `autolabel eval`",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=9,
        )
    fig.tight_layout()
    return _save(fig, path)


def _selection_thumbs(src: Path, folder: Path, manifest: dict) -> list[tuple[str | None, str | None]]:
    """Copy the selection page's PNGs of each pick (in `src`) next to index.html (the page stays one folder)."""
    out = []
    for r in range(len(manifest["selected"])):
        names = []
        for kind in ("cameras", "bev"):
            p = src / f"{r:03d}_{kind}.png"
            if p.is_file():
                shutil.copyfile(p, folder / f"selected_{r:03d}_{kind}.png")
                names.append(f"selected_{r:03d}_{kind}.png")
            else:
                names.append(None)
        out.append((names[0], names[1]))
    return out


def write_round_report(
    folder: Path,
    k: int,
    model,
    threshold: float,
    dataset: FrameDataset,
    split: str,
    device,
    grid: GridSpec,
    image_size: tuple[int, int],
    render_cfg: RenderConfig,
    select_dir: Path,
    manifest: dict | None,
    last: bool,
    drop_quantile: float,
    metrics: dict,
    history: list[dict],
    export: dict | None = None,
    title: str = "",
    run_dir: Path | None = None,
    n_frames: int = 2,
) -> Path:
    """Write round k's ``index.html`` and its PNGs into `folder`; returns the page's path.

    model: the round's network (read out at `threshold`), shown on a few frames of `dataset` (the `split`
    frames, with ground truth where there is some); select_dir / manifest: the round's selection (manifest
    None when nothing was selected: the `last` round, or not yet); metrics: the evaluate stage's result
    (labelled, val, pseudo, pseudo_thresholded); export: the export stage's (frames, kept_in_mask_camera);
    history: one entry per round so far (this one last); title / run_dir: the page's heading.
    """
    folder.mkdir(parents=True, exist_ok=True)

    shown = []
    picks = np.linspace(0, len(dataset) - 1, min(n_frames, len(dataset))).round().astype(int) if len(dataset) else []
    for j, i in enumerate(picks):
        item = dataset[int(i)]
        cams = frame_figure(model, item, grid, image_size, render_cfg, device, folder / f"frame{j}_cameras.png")
        sem, _ = predict(
            model,
            item["images"][None].to(device),
            item["intrinsics"][None].to(device),
            item["cam2ego"][None].to(device),
            occupied_threshold=threshold,
        )
        pred = sem[0].cpu().numpy()
        gt = item["gt_semantics"].numpy() if bool(item["has_gt"]) else None
        scores = None
        if gt is not None:
            m = OccupancyMetric()
            m.update(pred, gt, item["gt_mask"].numpy().astype(bool))
            scores = m.compute().as_dict()
        occ = occupancy_figure(pred, gt, folder / f"frame{j}_occupancy.png")
        shown.append(P.frame_section(split, item["token"], scores, occ, cams))
    thumbs = _selection_thumbs(select_dir, folder, manifest) if manifest else []
    sel_page = select_dir / "index.html"
    sel_link = os.path.relpath(sel_page, folder) if sel_page.is_file() else None
    budget = budget_figure(history, folder / "budget.png") if history else None
    n_selected = None if manifest is None else len(manifest["selected"])
    summary = P.summary_table(
        metrics,
        export,
        drop_quantile,
        metrics.get("labelled", 0),
        threshold,
        n_selected,
        metrics.get("labelled_voxels"),
    )
    curve = P.history_table(history) + (
        f"<br><img src='{budget}' alt='mIoU against labelled frames'>" if budget else ""
    )
    sections = [
        ("Summary", f"<div class='row'><div>{summary}</div><div>{P.per_class_table(metrics)}</div></div>"),
        ("Frames selected for annotation", P.selection_section(manifest, thumbs, sel_link, last)),
        ("Predicted and true occupancy", P.legend() + "".join(shown)),
        ("Budget curve across rounds", curve),
    ]
    text = P.page(f"{title}: round {k}", f"{split} frames shown; run folder {run_dir}", sections)
    atomic_write(folder / "index.html", lambda fh: fh.write(text.encode()))
    return folder / "index.html"
