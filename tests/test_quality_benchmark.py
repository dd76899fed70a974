"""benchmarks/quality.py --micro: every variant trains and is scored, and the table is printed."""
from __future__ import annotations

import json

from tiny_models import run_micro_benchmark


def test_quality_harness_runs_micro(tmp_path):
    # two processes (one per GPU on a GPU machine; both on the CPU here): the DTS chain in one, the rest in the other
    out = run_micro_benchmark("quality.py", tmp_path / "q", "--gpus", "2")
    r = json.loads((tmp_path / "q" / "results.json").read_text())
    assert set(r) == {"3d_supervised", "render_exact", "render_noisy", "noisy_dts", "dts_active_5pct", "dts_random_5pct",
                      "pseudo_labels"}
    assert all(r[v]["geometric_iou"] is not None for v in r)
    assert len(r["dts_active_5pct"]["selected"]) == 1 and r["dts_active_5pct"]["strategy"] == "coreset"
    first = json.loads((tmp_path / "q" / "3d_supervised" / "round_0" / "train" / "history.jsonl").read_text().splitlines()[0])
    assert first["labels3d"] > 0 and "sem2d" not in first  # the upper bound trains on 3D labels only
    assert {f.name for f in (tmp_path / "q").glob("results.*.json")} == {"results.0.json", "results.1.json"}
    assert "3d_supervised" in out.stdout and (tmp_path / "q" / "training_curves.png").stat().st_size > 1000
