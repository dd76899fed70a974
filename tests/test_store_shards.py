"""Issue 23, stores at fleet size: S frames per shard file, writes that stay atomic and resumable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from autolabel.errors import DataError
from autolabel.store.frame_arrays import ArraySpec, FrameArrays, ShardWriter, open_root, pending_frames

SPECS = [ArraySpec("a", (3, 4), "uint8", 255), ArraySpec("b", (5,), "float32", 0.0)]


def _group(path: Path, n: int, shard_frames: int | None) -> FrameArrays:
    tokens = [f"tok{i}" for i in range(n)]
    return FrameArrays.create_or_open(
        open_root(path, "a"), "g", SPECS, tokens, {}, (), f"store {path}", shard_frames=shard_frames
    )


class Crash(Exception):
    """Stands for the process dying (an exception, as tests/test_faults.py injects them)."""


def _frame(i: int) -> dict:
    return {"a": np.full((3, 4), i % 250, np.uint8), "b": np.arange(5, dtype=np.float32) * i}


def _fill(arrays: FrameArrays, fail_at: int | None = None) -> None:
    pending = pending_frames(arrays)
    writer = ShardWriter(arrays, pending)
    for k, i in enumerate(pending):
        if k == fail_at:
            raise Crash  # the run dies while computing this frame
        writer.add(i, **_frame(i))


def _files(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("n", [10, 100])
def test_file_count_is_n_over_shard_size(tmp_path, n):
    """Before: one file per frame and array (plus done). After: one per shard of 8 frames."""
    before = _group(tmp_path / "one.zarr", n, shard_frames=1)
    _fill(before)
    after = _group(tmp_path / "sharded.zarr", n, shard_frames=8)
    _fill(after)
    shards = -(-n // 8)
    metadata = 5  # group, tokens, done, a, b: zarr.json each; tokens is one chunk
    assert before.file_count() == 3 * n + metadata + 1
    assert after.file_count() == 3 * shards + metadata + 1
    assert after.shard_frames == 8 and after.group["a"].chunks == (1, 3, 4)
    for i in range(n):
        np.testing.assert_array_equal(after.read(i, "a"), _frame(i)["a"])
        np.testing.assert_array_equal(after.read(i, "b"), _frame(i)["b"])


def test_default_shard_size_follows_the_frame_bytes(monkeypatch):
    from autolabel.store import frame_arrays
    from autolabel.store.labels import label_specs
    from autolabel.supervision.cache import cache_specs
    from kernels.grid import GridSpec

    monkeypatch.delenv("AUTOLABEL_SHARD_FRAMES", raising=False)
    n = 34_149  # nuScenes trainval keyframes
    s_labels = frame_arrays.frames_per_shard(label_specs(GridSpec()), n)
    s_cache = frame_arrays.frames_per_shard(cache_specs(6, (256, 704)), n)
    assert 50 <= s_labels <= 200 and 16 <= s_cache <= 64
    # files per array: hundreds to about a thousand, not tens of thousands
    assert -(-n // s_labels) < 500 and -(-n // s_cache) < 1500
    monkeypatch.setenv("AUTOLABEL_SHARD_FRAMES", "3")
    assert frame_arrays.frames_per_shard(SPECS, 10) == 3 and frame_arrays.frames_per_shard(SPECS, 2) == 2


def test_a_crash_mid_shard_loses_only_unwritten_frames_and_resume_completes(tmp_path):
    path = tmp_path / "s.zarr"
    arrays = _group(path, 20, shard_frames=4)
    with pytest.raises(Crash):
        _fill(arrays, fail_at=10)  # frames 0..7 (two whole shards) written, 8 and 9 buffered and lost
    assert arrays.done().tolist() == [True] * 8 + [False] * 12
    written = _files(path)
    again = _group(path, 20, shard_frames=4)
    assert pending_frames(again) == list(range(8, 20))
    _fill(again)
    assert again.done().all()
    after = _files(path)
    for key in ("g/a/c/0/0/0", "g/a/c/1/0/0", "g/b/c/0/0", "g/b/c/1/0"):  # finished shards keep their bytes
        assert after[key] == written[key]
    for i in range(20):
        np.testing.assert_array_equal(again.read(i, "b"), _frame(i)["b"])


def test_a_crash_inside_a_shard_write_leaves_its_frames_not_done(tmp_path, monkeypatch):
    """The process dies after array `a`'s shard file was replaced and before `b`'s: the shard's frames are
    not done, earlier shards keep their bytes, and a rerun writes the shard again."""
    import zarr.storage._local as local

    path = tmp_path / "s.zarr"
    arrays = _group(path, 12, shard_frames=4)
    real = local._put
    calls = []

    def dies(p, value, exclusive=False):
        if "/b/c/1" in str(p):
            raise Crash
        calls.append(str(p))
        return real(p, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", dies)
    with pytest.raises(Crash):
        _fill(arrays)
    monkeypatch.undo()
    assert any("/a/c/1" in c for c in calls)
    assert arrays.done().tolist() == [True] * 4 + [False] * 8
    written = _files(path)
    _fill(_group(path, 12, shard_frames=4))
    final = FrameArrays.open(open_root(path, "r"), "g", SPECS, "s")
    assert final.done().all() and _files(path)["g/a/c/0/0/0"] == written["g/a/c/0/0/0"]
    for i in range(12):
        np.testing.assert_array_equal(final.read(i, "a"), _frame(i)["a"])


def test_ranks_take_whole_shards(tmp_path):
    arrays = _group(tmp_path / "s.zarr", 10, shard_frames=3)
    parts = [pending_frames(arrays, r, 2) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == list(range(10))
    shards = [{i // 3 for i in p} for p in parts]
    assert not shards[0] & shards[1]


def test_a_missing_or_corrupt_shard_names_array_group_and_frame(tmp_path):
    path = tmp_path / "s.zarr"
    arrays = _group(path, 8, shard_frames=4)
    _fill(arrays)
    (path / "g" / "a" / "c" / "1" / "0" / "0").unlink()
    with pytest.raises(DataError, match=r"array 'a' of group 'g', frame tok5 is marked done but its chunk is missing"):
        arrays.read(5, "a")
    with pytest.raises(DataError, match=r"array 'a' of group 'g', frame tok4 is marked done"):
        arrays.check_complete()
    shard = path / "g" / "b" / "c" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[:20])
    with pytest.raises(DataError, match=r"array 'b' of group 'g', frame tok2: chunk cannot be read"):
        arrays.read(2, "b")


def test_groups_written_before_sharding_still_read_and_write(tmp_path):
    """One chunk per frame, no sharding codec (stores made before issue 23)."""
    root = open_root(tmp_path / "old.zarr", "a")
    group = root.create_group("g")
    group.create_array("a", shape=(3, 3, 4), dtype="uint8", chunks=(1, 3, 4), fill_value=255)
    group.create_array("b", shape=(3, 5), dtype="float32", chunks=(1, 5), fill_value=0.0)
    group.create_array("done", shape=(3,), dtype=bool, chunks=(1,), fill_value=False)
    tok = group.create_array("tokens", shape=(3,), dtype=str, chunks=(3,))
    tok[:] = np.asarray(["tok0", "tok1", "tok2"], dtype=object)
    arrays = FrameArrays.open(root, "g", SPECS, "old")
    assert arrays.shard_frames == 1
    _fill(arrays)
    arrays.check_complete()
    assert arrays.done().all() and arrays.read(2, "a")[0, 0] == 2
    (tmp_path / "old.zarr" / "g" / "a" / "c" / "1" / "0" / "0").unlink()
    with pytest.raises(DataError, match="frame tok1 is marked done but its chunk is missing"):
        arrays.read(1, "a")
