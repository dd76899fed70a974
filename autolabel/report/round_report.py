"""The per-round HTML report: what people look at to judge the labels.

For a few validation (else pool) frames: the six cameras beside the rendered depth, the rendered
semantics and the 2D supervision; bird's-eye views of the predicted and ground-truth occupancy and a
3D perspective view; per-class IoU bars; the budget curve across rounds; the frames selected for
annotation. Every figure is a PNG next to ``index.html``.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import torch

from occnet.classes import FREE_ID, IGNORE_ID, OCC3D_CLASS_NAMES, colorize
from occnet.inference import predict
from occnet.rays import image_rays, render

from ..active.rounds import bev_image
from ..dataset import open_frames
from ..dts.config import readout
from ..dts.label import load_teacher
from ..recipe import Recipe
from ..supervision.providers import resolve_device
from ..training.data import FrameDataset
from ..training.rounds import checkpoint_path, open_cache
from .figures import pyplot, save_figure


def _save(fig, path: Path) -> str:
    return save_figure(fig, path, dpi=100).name


def _depth_rgb(depth: np.ndarray, vmax: float) -> np.ndarray:
    import matplotlib

    rgb = matplotlib.colormaps["turbo"](np.clip(depth / vmax, 0, 1))[..., :3]
    return (np.where(depth[..., None] > 0, rgb, 0) * 255).astype(np.uint8)


def frame_figure(model, item: dict, recipe: Recipe, device, path: Path) -> str:
    """Rows per camera: image | rendered depth | rendered semantics | 2D supervision."""
    plt = pyplot()
    grid, hw = recipe.network.grid, tuple(recipe.network.image_size)
    b = {k: item[k][None].to(device) for k in ("images", "intrinsics", "cam2ego")}
    with torch.no_grad():
        out = model(b["images"], b["intrinsics"], b["cam2ego"])
        rays = image_rays(b["intrinsics"][0], b["cam2ego"][0], hw)
        r = render(out.density.float(), out.logits.float(), rays, grid, recipe.render)
    n = item["images"].shape[0]
    depth = r.depth.reshape(n, *hw).cpu().numpy()
    sem = r.probs.argmax(-1).reshape(n, *hw).cpu().numpy()
    sem = np.where(r.opacity.reshape(n, *hw).cpu().numpy() > 0.5, sem, IGNORE_ID)
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    vmax = float(np.percentile(depth, 98)) or 1.0  # the frame's own depth range, so that structure shows
    fig, axes = plt.subplots(n, 4, figsize=(12, 1.9 * n * hw[0] / hw[1] * 4 / 3 + 0.6))
    for c in range(n):
        img = (item["images"][c].permute(1, 2, 0).numpy() * std + mean).clip(0, 1)
        panels = [img, _depth_rgb(depth[c], vmax), colorize(sem[c].astype(np.uint8)), colorize(item["semantics"][c].numpy())]
        for a, p, title in zip(axes[c], panels, ("camera", "rendered depth", "rendered semantics", "2D supervision")):
            a.imshow(p)
            a.set_xticks([])
            a.set_yticks([])
            if c == 0:
                a.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def occupancy_figure(pred: np.ndarray, gt: np.ndarray | None, path: Path) -> str:
    """Bird's-eye views (prediction, ground truth) and a 3D perspective view of the prediction."""
    plt = pyplot()
    cols = 3 if gt is not None else 2
    fig = plt.figure(figsize=(4 * cols, 4))
    ax = fig.add_subplot(1, cols, 1)
    ax.imshow(bev_image(pred))
    ax.set_title("predicted (bird's-eye)", fontsize=9)
    ax.axis("off")
    if gt is not None:
        ax = fig.add_subplot(1, cols, 2)
        ax.imshow(bev_image(gt))
        ax.set_title("ground truth (bird's-eye)", fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(1, cols, cols, projection="3d")
    occ = np.argwhere((pred != FREE_ID) & (pred != IGNORE_ID))
    if len(occ) > 40000:
        occ = occ[np.random.default_rng(0).choice(len(occ), 40000, replace=False)]
    colors = colorize(pred[tuple(occ.T)].astype(np.uint8)) / 255.0
    ax.scatter(occ[:, 0], occ[:, 1], occ[:, 2], c=colors, s=1.5, marker="s", depthshade=False)
    ax.set_box_aspect((pred.shape[0], pred.shape[1], pred.shape[2] * 1.5))
    ax.view_init(elev=35, azim=-120)
    ax.set_title("predicted (3D)", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


def iou_figure(per_class: dict, title: str, path: Path) -> str:
    plt = pyplot()
    names = [n for n in OCC3D_CLASS_NAMES[:FREE_ID]]
    vals = [per_class.get(n) for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    colors = colorize(np.arange(FREE_ID, dtype=np.uint8)) / 255.0
    ax.bar(range(len(names)), [v if v is not None else 0 for v in vals], color=colors, edgecolor="black", lw=0.4)
    for i, v in enumerate(vals):
        ax.text(i, (v or 0) + 1, "-" if v is None else f"{v:.0f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def budget_figure(history: list[dict], path: Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for key, label in (("val_miou", "validation mIoU (network)"), ("pseudo_miou", "pseudo-label mIoU (pool)")):
        pts = [(h["labelled"], h[key]) for h in history if h.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", label=label)
    ax.set_xlabel("frames with manual 3D labels")
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def write_round_report(recipe: Recipe, k: int, metrics: dict, history: list[dict], n_frames: int = 2) -> Path:
    folder = recipe.run_dir / "report" / f"round_{k}"
    folder.mkdir(parents=True, exist_ok=True)
    device = resolve_device(recipe.device)
    model, _, _ = load_teacher(recipe.network, checkpoint_path(recipe, k), device, prefer_teacher=False)
    threshold = readout(recipe.dts, checkpoint_path(recipe, k)).occupied_threshold
    split = "val" if recipe.data.val_scenes else "train"
    frames = open_frames(recipe, split, load_images=True, load_gt=True)
    dataset = FrameDataset(frames, recipe.network.image_size, labels="cache", cache=open_cache(recipe), grid=recipe.network.grid,
                           manual=None)
    parts = [f"<h1>{html.escape(recipe.name)}: round {k}</h1>"]
    summary = {key: v for key, v in metrics.items() if not isinstance(v, dict)}
    parts.append("<pre>" + html.escape(json.dumps(summary, indent=1)) + "</pre>")
    picks = np.linspace(0, len(dataset) - 1, min(n_frames, len(dataset))).round().astype(int) if len(dataset) else []
    for j, i in enumerate(picks):
        item = dataset[int(i)]
        f1 = frame_figure(model, item, recipe, device, folder / f"frame{j}_cameras.png")
        sem, _ = predict(model, item["images"][None].to(device), item["intrinsics"][None].to(device),
                         item["cam2ego"][None].to(device), occupied_threshold=threshold)
        gt = item["gt_semantics"].numpy() if bool(item["has_gt"]) else None
        f2 = occupancy_figure(sem[0].cpu().numpy(), gt, folder / f"frame{j}_occupancy.png")
        parts.append(f"<h2>{split} frame {html.escape(item['token'])}</h2><img src='{f1}'><br><img src='{f2}'>")
    for key, title in (("val", "validation: network, per-class IoU"), ("pseudo", "pseudo-labels on the pool, per-class IoU")):
        if metrics.get(key):
            name = iou_figure(metrics[key]["per_class_iou"], f"{title} (mIoU {metrics[key]['miou']})", folder / f"iou_{key}.png")
            parts.append(f"<h2>{title}</h2><img src='{name}'>")
    if history:
        parts.append(f"<h2>budget curve across rounds</h2><img src='{budget_figure(history, folder / 'budget.png')}'>")
    sel = recipe.round_dir(k) / "select" / "index.html"
    if sel.is_file():
        parts.append(f"<h2>frames selected for annotation</h2><p><a href='{Path('../../round_' + str(k)) / 'select' / 'index.html'}'>"
                     f"selection page (cameras, current prediction, reasons)</a></p>")
    page = ("<!doctype html><meta charset='utf-8'><title>" + html.escape(f"{recipe.name} round {k}") + "</title>"
            "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}img{max-width:100%}</style>" + "\n".join(parts))
    (folder / "index.html").write_text(page)
    return folder / "index.html"
