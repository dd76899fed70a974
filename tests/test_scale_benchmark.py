"""benchmarks/scale.py --micro: every stage of the scale benchmark runs through the real code paths (cache
write, training on real and on random input, labelling, export, store counts) and the table is printed."""

from __future__ import annotations

import json
import math

from tiny_models import run_micro_benchmark


def test_scale_benchmark_runs_micro(tmp_path):
    out = run_micro_benchmark("scale.py", tmp_path / "s", "--out", str(tmp_path / "res"))
    r = json.loads((tmp_path / "res" / "scale_results.json").read_text())
    meta = r["meta"]
    assert meta["micro"] and meta["device"] == "cpu" and meta["trainval_keyframes"] == 34_149
    # the world: 2 scenes x 1 keyframe, the keyframe sweep and 2 earlier ones per keyframe
    assert meta["world"]["keyframes"] == 2 and meta["world"]["lidar_sweeps_per_keyframe"] == 3
    assert meta["data_sweeps"] == 2 and meta["recipe"] == "recipes/nuscenes_label_free.yaml"
    assert r["supervise"]["frames"] == 2 and r["supervise"]["s_per_frame"] > 0
    assert r["fuse"]["frames"] == 2 and r["fuse"]["s_per_frame"] > 0  # the recipe fuses the evidence (issue 20)
    t = r["train"]
    # one timed step per phase after one warm-up step, on real data and on random input alike
    for key in ("real_render_s", "real_dts_s", "random_render_s", "random_dts_s"):
        assert len(t[key]) == 1 and t[key][0] > 0, key
    assert t["dts_share"] == 0.5  # the nuScenes recipe: DTS from step 12,000 of 24,000
    assert t["steps_full"] == math.ceil(12 * 34_149 / t["batch"]) and t["ratio"] > 0
    assert r["label"]["frames"] == 2 and r["label"]["frames_per_s"] > 0
    assert r["export"]["frames"] == 2 and r["export"]["files"] == 3  # two labels.npz and export.json
    rnd, cache = r["store"]["round"], r["store"]["cache"]
    # four label arrays, the confidence histogram and done, one shard each at this size; at full size the shards
    # hold S frames each
    assert rnd["arrays_per_frame"] == 6 and rnd["frames_per_shard_now"] == 2
    assert rnd["files_full"] == 6 * math.ceil(34_149 / rnd["frames_per_shard_full"]) + 1 + (rnd["files"] - 6 - 1)
    # a writer holds one shard of raw frames, at most SHARD_BYTES (512 MiB)
    assert 0 < rnd["writer_bytes_full"] <= 512 * 2**20 and 0 < cache["writer_bytes_full"] <= 512 * 2**20
    # images, semantics, confidence, depth, the runner-up names and their confidences (supervision.runner_ups), done
    assert cache["arrays_per_frame"] == 7 and cache["bytes_per_frame"] > rnd["bytes_per_frame"]
    for stage in ("supervise", "label", "export"):
        assert r[stage]["host_peak_bytes"] > 0 and r[stage]["gpu_peak_bytes"] is None
    assert "| labelling" in out.stdout and "34,149" in out.stdout
    assert (tmp_path / "res" / "scale_table.md").read_text().strip() in out.stdout
