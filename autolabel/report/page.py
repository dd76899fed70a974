"""The round report's HTML: one static page (tables, a colour legend, <img> of PNGs; no script).

Pure functions from already computed numbers and figure file names to HTML, so that the page's
content does not depend on how the figures were made. Numbers are IoUs in percent as
`OccupancyScores.as_dict` gives them (None = class absent from prediction and truth, shown "-").
"""

from __future__ import annotations

import html
from typing import Sequence

from occnet.classes import FREE_ID, OCC3D_CLASS_NAMES, OCC3D_COLORS

STYLE = """
body{font-family:"DejaVu Sans","Liberation Sans",Arial,sans-serif;margin:24px 32px;max-width:1340px;color:#222;
     font-size:14px;line-height:1.4}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc;padding-bottom:3px}
h3{font-size:15px;margin:18px 0 6px}
.sub{color:#666;margin:0 0 16px}
table{border-collapse:collapse;margin:4px 0 8px}
th,td{border:1px solid #d0d0d0;padding:3px 9px;text-align:right;vertical-align:middle}
th{background:#f2f2f2;font-weight:600}
td.l,th.l{text-align:left}
.big td.v{font-size:17px;font-weight:600}
.row{display:flex;gap:28px;align-items:flex-start;flex-wrap:wrap}
.sw{display:inline-block;width:14px;height:14px;border:1px solid #555;vertical-align:-2px;margin-right:5px}
.bar{display:inline-block;height:9px;background:#4a78b5;vertical-align:1px;margin-left:6px}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;max-width:1300px;margin:4px 0 10px}
.legend span{white-space:nowrap}
.note{color:#555;font-size:13px;max-width:1250px}
img{max-width:100%}
img.thumb{height:150px;max-width:none}
code{font-size:13px}
"""


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _swatch(c: int) -> str:
    r, g, b = (int(x) for x in OCC3D_COLORS[c])
    return f"<span class='sw' style='background:rgb({r},{g},{b})'></span>"


def legend() -> str:
    """The class colours used by every figure of the page (free space is not drawn)."""
    items = "".join(f"<span>{_swatch(c)}{html.escape(OCC3D_CLASS_NAMES[c])}</span>" for c in range(FREE_ID))
    return f"<div class='legend' id='legend'>{items}</div>"


# the DTS teacher's column: the network that labels the pool (with the LiDAR depth prior when dts.depth_aware)
TEACHER_TITLE = ("labeller (DTS teacher)", "validation frames")


def summary_table(
    metrics: dict,
    export: dict | None,
    drop_quantile: float,
    labelled: int,
    occupancy_threshold: float,
    n_selected: int | None,
    labelled_voxels: int | None = None,
) -> str:
    """The round's numbers: scores against the ground truth (when there is some) and the label counts."""
    val, pseudo, kept = metrics.get("val") or {}, metrics.get("pseudo") or {}, metrics.get("pseudo_thresholded") or {}
    teacher = metrics.get("val_teacher")
    cov = kept.get("coverage")
    # every score counts the voxels of the true mask_camera (Occ3D's convention); the kept column only those kept
    cols = [
        ("network", "validation frames", val.get("miou"), val.get("geometric_iou"), 100.0 if val else None),
        *(
            [(*TEACHER_TITLE, teacher.get("miou"), teacher.get("geometric_iou"), 100.0)]
            if teacher  # with DTS: the teacher that labels the pool, on the same frames
            else []
        ),
        ("pseudo-labels", "every voxel", pseudo.get("miou"), pseudo.get("geometric_iou"), 100.0 if pseudo else None),
        (
            "pseudo-labels kept",
            f"drop quantile {drop_quantile:g}",
            kept.get("miou"),
            kept.get("geometric_iou"),
            None if cov is None else 100 * cov,
        ),
    ]
    head = "".join(f"<th>{html.escape(a)}<br><small>{html.escape(b)}</small></th>" for a, b, *_ in cols)
    rows = [
        ("mIoU (%)", [_pct(c[2]) for c in cols]),
        ("geometric IoU (%)", [_pct(c[3]) for c in cols]),
        ("voxels scored (% of true mask_camera)", [_pct(c[4]) for c in cols]),
    ]
    body = "".join(
        f"<tr><td class='l'>{name}</td>" + "".join(f"<td class='v'>{v}</td>" for v in vals) + "</tr>"
        for name, vals in rows
    )
    scores = (
        "<table class='big' id='summary'><tr><th class='l'>scored against<br>the ground truth</th>"
        f"{head}</tr>{body}</table>"
    )
    if not (val or pseudo):
        scores += "<p class='note'>The dataset has no <code>gts/</code> ground truth: no scores.</p>"
    facts = [
        ("frames with manual 3D labels", str(labelled)),
        ("voxels labelled by annotators", "-" if labelled_voxels is None else f"{labelled_voxels:,}"),
        ("frames exported (Occ3D)", "-" if export is None else str(export.get("frames", "-"))),
        # over the pseudo-labelled (and carried) frames: undefined (not 0) when every exported frame is a manual label
        (
            "kept share of the exported mask_camera (%)",
            "-"
            if export is None or export.get("frames_pseudo", 0) + export.get("frames_carried", 0) == 0
            else _pct(100 * export["kept_in_mask_camera"]),
        ),
        ("frames selected for annotation", "-" if n_selected is None else str(n_selected)),
        ("occupancy read-out threshold", f"{occupancy_threshold:g}"),
    ]
    facts_html = "".join(f"<tr><td class='l'>{html.escape(a)}</td><td class='v'>{b}</td></tr>" for a, b in facts)
    return scores + f"<table class='big' id='facts'>{facts_html}</table>"


def per_class_table(metrics: dict) -> str:
    """Per-class IoU with the class colours (the figures' legend too), bars scaled to 100%."""
    cols = [
        (key, title)
        for key, title in (
            ("val", "network<br><small>validation frames</small>"),
            ("val_teacher", f"{TEACHER_TITLE[0]}<br><small>{TEACHER_TITLE[1]}</small>"),
            ("pseudo", "pseudo-labels<br><small>pool, every voxel</small>"),
        )
        if metrics.get(key)
    ]
    head = "".join(f"<th>{t}</th>" for _, t in cols)
    rows = []
    for c, name in enumerate(OCC3D_CLASS_NAMES):
        cells = []
        for key, _ in cols:
            v = metrics[key]["per_class_iou"].get(name)
            bar = "" if v is None else f"<span class='bar' style='width:{0.8 * v:.0f}px'></span>"
            cells.append(f"<td>{_pct(v)}{bar}</td>")
        label = html.escape(name) + (" <i>(not in mIoU)</i>" if c == FREE_ID else "")
        rows.append(f"<tr><td class='l'>{_swatch(c)}{label}</td>{''.join(cells)}</tr>")
    if not cols:
        return "<p class='note'>No ground truth: no per-class IoU.</p>"
    return f"<table id='per-class'><tr><th class='l'>IoU (%) by class</th>{head}</tr>{''.join(rows)}</table>"


def selection_section(
    manifest: dict | None, thumbs: Sequence[tuple[str, str | None]], select_page: str | None, last_round: bool
) -> str:
    """The frames active selection picked for annotation, with their scores, reason and pictures."""
    if manifest is None:
        why = "the last round selects nothing (the run ends with it)" if last_round else "no selection manifest yet"
        return f"<p class='note' id='selection'>No frames selected: {why}.</p>"
    keys = [k for k in ("uncertainty", "disagreement", "residual", "cost") if any(k in r for r in manifest["selected"])]
    head = "".join(f"<th>{k}</th>" for k in keys)
    rows = []
    for i, row in enumerate(manifest["selected"]):
        cams, bev = thumbs[i] if i < len(thumbs) else (None, None)
        pics = "".join(
            f"<img class='thumb' src='{html.escape(p)}' alt='{alt}'> "
            for p, alt in ((cams, "six cameras"), (bev, "current prediction, bird's-eye"))
            if p
        )
        vals = "".join(f"<td>{row[k]:.3f}</td>" if isinstance(row.get(k), (int, float)) else "<td>-</td>" for k in keys)
        reason = row["reason"] + (
            f"; tiles {', '.join(str(t['index']) for t in row['tiles'])} ({row['voxels']:,} voxels)"
            if "tiles" in row
            else ""
        )
        rows.append(
            f"<tr><td>{i + 1}</td><td class='l'>{html.escape(row['scene'])}<br><code>{html.escape(row['token'])}</code>"
            f"</td>{vals}<td class='l'>{html.escape(reason)}</td><td class='l'>{pics}</td></tr>"
        )
    link = (
        f" The annotators' page: <a href='{html.escape(select_page)}'>{html.escape(select_page)}</a>."
        if select_page
        else ""
    )
    unit = {"cost": "cost units", "voxels": "labelled voxels"}.get(
        manifest.get("budget_unit"), "cost units" if manifest.get("cost_model") else "frames"
    )
    return (
        f"<p id='selection'>Strategy <b>{html.escape(str(manifest['strategy']))}</b>, budget {manifest['budget']} "
        f"{unit}, "
        f"spent {manifest['spent']}; pool {manifest.get('pool_size', '-')} frames, "
        f"{manifest.get('already_labelled', '-')} labelled before.{link}</p>"
        f"<table id='selected'><tr><th>#</th><th class='l'>scene / sample token</th>{head}<th class='l'>reason</th>"
        f"<th class='l'>cameras | current prediction</th></tr>{''.join(rows)}</table>"
    )


def history_table(history: Sequence[dict]) -> str:
    rows = "".join(
        f"<tr><td>{h['round']}</td><td>{h.get('labelled', 0)}</td><td>{h.get('labelled_voxels', '-')}</td>"
        f"<td>{_pct(h.get('val_miou'))}</td><td>{_pct(h.get('pseudo_miou'))}</td></tr>"
        for h in history
    )
    return (
        "<table id='history'><tr><th>round</th><th>frames with manual 3D labels</th><th>labelled voxels</th>"
        "<th>validation mIoU (%)</th>"
        f"<th>pseudo-label mIoU (%)</th></tr>{rows}</table>"
    )


def frame_section(split: str, token: str, scores: dict | None, occupancy_png: str, cameras_png: str) -> str:
    s = (
        ""
        if scores is None
        else f" - this frame: mIoU {_pct(scores['miou'])}%, geometric IoU {_pct(scores['geometric_iou'])}%"
    )
    return (
        f"<h3>{html.escape(split)} frame <code>{html.escape(token)}</code>{s}</h3>"
        f"<img src='{html.escape(occupancy_png)}' alt='predicted and true occupancy, 3D and bird&#39;s-eye'>"
        f"<p class='note'>Occupied voxels in the whole grid, coloured by class; the scores count only the "
        f"voxels of the true mask_camera.</p>"
        f"<img src='{html.escape(cameras_png)}' alt='cameras, rendered depth, rendered semantics, 2D supervision'>"
    )


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str]]) -> str:
    """The whole document: a title, then (heading, html) sections in order (an empty heading: none)."""
    body = "\n".join((f"<h2>{html.escape(h)}</h2>\n" if h else "") + content for h, content in sections)
    return (
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1><p "
        f"class='sub'>{html.escape(subtitle)}</p>\n"
        f"{body}\n</body></html>\n"
    )
