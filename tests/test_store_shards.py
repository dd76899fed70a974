"""Issue 23, stores at fleet size: S frames per shard file, writes that stay atomic and resumable."""

from __future__ import annotations

import hashlib
import json
import threading
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
    from autolabel.store.labels import HISTOGRAM, label_specs
    from autolabel.supervision.cache import cache_specs
    from kernels.grid import GridSpec

    monkeypatch.delenv("AUTOLABEL_SHARD_FRAMES", raising=False)
    n = 34_149  # nuScenes trainval keyframes
    s_labels = frame_arrays.frames_per_shard(label_specs(GridSpec()) + [HISTOGRAM], n)
    s_cache = frame_arrays.frames_per_shard(cache_specs(6, (256, 704)), n)
    assert s_labels == 208 and s_cache == 55  # frames of 2.58 MB and 9.7 MB raw: SHARD_BYTES = 512 MiB
    # a trainval round: 4 label arrays, the histogram and done per shard, tokens and 8 zarr.json: within 1,000
    # files (issue 23)
    assert 6 * -(-n // s_labels) + 1 + 8 == 999
    # files per array: hundreds, not tens of thousands
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


def test_frames_with_gaps_are_written_into_a_shard(tmp_path):
    """write_frames of frames that are not consecutive (a shard whose other frames are done already): zarr's
    orthogonal write raised "shape mismatch" for a sharded array of more than one dimension."""
    arrays = _group(tmp_path / "s.zarr", 8, shard_frames=4)
    idx = [0, 2, 3, 6]
    arrays.write_frames(idx, **{k: np.stack([_frame(i)[k] for i in idx]) for k in ("a", "b")})
    assert arrays.done().tolist() == [True, False, True, True, False, False, True, False]
    for i in range(8):
        want = _frame(i) if i in idx else {"a": np.full((3, 4), 255, np.uint8), "b": np.zeros(5, np.float32)}
        np.testing.assert_array_equal(arrays.read(i, "a"), want["a"])
        np.testing.assert_array_equal(arrays.read(i, "b"), want["b"])


def test_a_writer_holds_one_copy_of_a_shard(tmp_path):
    """ShardWriter copies each frame into its shard's block on arrival: the caller may reuse its arrays,
    and a writer holds the raw bytes of its started shards once (no stacked second copy at the write)."""
    arrays = _group(tmp_path / "s.zarr", 10, shard_frames=4)
    pending = pending_frames(arrays)
    writer = ShardWriter(arrays, pending)
    reused = {"a": np.zeros((3, 4), np.uint8), "b": np.zeros(5, np.float32)}
    for i in pending:
        reused["a"][:] = _frame(i)["a"]
        reused["b"][:] = _frame(i)["b"]
        writer.add(i, **reused)
        # frame bytes: 12 (a) + 20 (b); a started shard's block holds its 4 frames (the last one 2)
        assert writer.buffered_bytes == (0 if i in (3, 7, 9) else (4 if i < 8 else 2) * 32)
    assert writer.buffered == 0 and arrays.done().all()
    for i in range(10):
        np.testing.assert_array_equal(arrays.read(i, "a"), _frame(i)["a"])
        np.testing.assert_array_equal(arrays.read(i, "b"), _frame(i)["b"])
    with pytest.raises(ValueError, match="array a has shape"):
        ShardWriter(_group(tmp_path / "t.zarr", 4, shard_frames=4), range(4)).add(0, a=np.zeros(3), b=np.zeros(5))


def test_a_background_writer_writes_what_a_plain_one_writes(tmp_path):
    """background=True (labelling, fusion and the cache overlap their writes with the next frames): the same
    files, byte for byte, as the writer that writes in the caller's thread."""
    plain = _group(tmp_path / "plain.zarr", 21, shard_frames=4)
    _fill(plain)
    arrays = _group(tmp_path / "bg.zarr", 21, shard_frames=4)
    with ShardWriter(arrays, pending_frames(arrays), background=True) as writer:
        for i in range(21):
            writer.add(i, **_frame(i))
    assert arrays.done().all()
    assert _files(tmp_path / "bg.zarr") == _files(tmp_path / "plain.zarr")


def test_a_background_writer_finishes_its_write_when_the_run_dies(tmp_path, monkeypatch):
    """The run dies while the write of a full shard is in flight: leaving the `with` waits for that write,
    so its frames are done (and a rerun skips them), and the run's own error is the one raised. A shard not
    yet full is not written."""
    arrays = _group(tmp_path / "s.zarr", 10, shard_frames=4)
    started, release = threading.Event(), threading.Event()
    write = FrameArrays.write_frames

    def slow_write(self, *a, **k):
        started.set()
        release.wait(5)  # the first shard's write is still running when the run dies
        return write(self, *a, **k)

    monkeypatch.setattr(FrameArrays, "write_frames", slow_write)
    with pytest.raises(Crash):
        with ShardWriter(arrays, pending_frames(arrays), background=True) as writer:
            for i in range(6):
                writer.add(i, **_frame(i))
            assert started.wait(5) and not arrays.done()[:4].any()
            release.set()
            raise Crash
    assert arrays.done().tolist() == [True] * 4 + [False] * 6
    assert pending_frames(arrays) == list(range(4, 10))


def test_a_background_writers_failed_write_is_raised(tmp_path, monkeypatch):
    """A write that fails in the writer thread (a full disk) surfaces in the caller, at the next shard or
    when the writer closes, not lost in the thread; its frames stay not done."""
    arrays = _group(tmp_path / "s.zarr", 8, shard_frames=4)

    def full_disk(self, *a, **k):
        raise DataError("store: disk full")

    monkeypatch.setattr(FrameArrays, "write_frames", full_disk)
    with pytest.raises(DataError, match="disk full"):
        with ShardWriter(arrays, pending_frames(arrays), background=True) as writer:
            for i in range(4):
                writer.add(i, **_frame(i))
    assert not arrays.done().any()


# ---- block reads (export at speed) -----------------------------------------------------------------
def _old_group(path: Path, n: int) -> FrameArrays:
    """A group as written before sharding: one chunk file per frame and array."""
    root = open_root(path, "a")
    group = root.create_group("g")
    group.create_array("a", shape=(n, 3, 4), dtype="uint8", chunks=(1, 3, 4), fill_value=255)
    group.create_array("b", shape=(n, 5), dtype="float32", chunks=(1, 5), fill_value=0.0)
    group.create_array("done", shape=(n,), dtype=bool, chunks=(1,), fill_value=False)
    tok = group.create_array("tokens", shape=(n,), dtype=str, chunks=(n,))
    tok[:] = np.asarray([f"tok{i}" for i in range(n)], dtype=object)
    return FrameArrays.open(root, "g", SPECS, "old")


@pytest.mark.parametrize("layout", ["sharded", "before sharding"])
def test_block_reads_give_what_frame_reads_give(tmp_path, layout):
    arrays = _group(tmp_path / "s.zarr", 11, shard_frames=4) if layout == "sharded" else _old_group(tmp_path / "o", 11)
    written = [i for i in range(11) if i not in (5, 9)]  # 5 and 9 never written: read as the fill value
    arrays.write_frames(written, **{k: np.stack([_frame(i)[k] for i in written]) for k in ("a", "b")})
    for block in (1, 3, 32):
        got = list(arrays.iter_frames([10, 0, 1, 2, 3, 4, 5, 6, 7, 9], ("a", "b"), block=block))
        assert [i for i, _ in got] == [0, 1, 2, 3, 4, 5, 6, 7, 9, 10]
        for i, f in got:
            for name in ("a", "b"):
                np.testing.assert_array_equal(f[name], arrays.read(i, name))
        assert (dict(got)[5]["a"] == 255).all() and (dict(got)[9]["b"] == 0).all()
    block = arrays.read_frames(2, 7, ("b",))
    np.testing.assert_array_equal(block["b"], np.stack([arrays.read(i, "b") for i in range(2, 7)]))


@pytest.mark.parametrize("layout", ["sharded", "before sharding"])
def test_block_reads_check_the_files_at_every_call(tmp_path, layout):
    """A file deleted after an earlier read is still found missing: nothing about the files is cached
    between calls (a cache of the shard-file checks was tried once and missed exactly this)."""
    if layout == "sharded":
        path = tmp_path / "s.zarr"
        arrays = _group(path, 8, shard_frames=4)
        gone, first = path / "g" / "a" / "c" / "1" / "0" / "0", "tok4"
    else:
        path = tmp_path / "old.zarr"
        arrays = _old_group(path, 8)
        gone, first = path / "g" / "a" / "c" / "5" / "0" / "0", "tok5"
    _fill(arrays)
    assert len(list(arrays.iter_frames(range(8), ("a", "b")))) == 8
    gone.unlink()
    with pytest.raises(
        DataError, match=rf"array 'a' of group 'g', frame {first} is marked done but its chunk is missing"
    ):
        list(arrays.iter_frames(range(8), ("a", "b")))
    with pytest.raises(DataError, match=rf"frame {first} is marked done"):
        arrays.read_frames(3, 8, ("a",))
    assert arrays.read_frames(0, 4, ("a",))["a"].shape == (4, 3, 4)  # the other shard still reads
    arrays.group["done"][4:8] = False  # frames not done: their missing file is legitimately the fill value
    lost = [0, 1, 2, 3] if layout == "sharded" else [1]  # frames 4..7 of the block held in the deleted file
    assert (arrays.read_frames(4, 8, ("a",))["a"][lost] == 255).all()


def test_a_corrupt_shard_in_a_block_read_names_its_frame(tmp_path):
    path = tmp_path / "s.zarr"
    arrays = _group(path, 8, shard_frames=4)
    _fill(arrays)
    shard = path / "g" / "b" / "c" / "1" / "0"
    shard.write_bytes(shard.read_bytes()[:20])
    with pytest.raises(DataError, match=r"array 'b' of group 'g', frame tok4: chunk cannot be read"):
        list(arrays.iter_frames(range(8), ("a", "b")))


def test_numpy_histogram_and_thresholds_match_the_torch_ones():
    """The export's numpy versions count and threshold exactly as store.confidence does (the training loop's)."""
    import torch

    from autolabel.store.confidence import class_thresholds, confidence_histogram, threshold
    from autolabel.store.export import confident_mask, kept_mask, level_histogram, thresholded

    rng = np.random.default_rng(0)
    sem = rng.integers(0, 18, (3, 20, 20, 8)).astype(np.uint8)
    sem[rng.random(sem.shape) < 0.2] = 255
    conf = rng.integers(0, 256, sem.shape).astype(np.uint8)
    hist = level_histogram(sem, conf)
    expected = sum(confidence_histogram(torch.from_numpy(s), torch.from_numpy(c)) for s, c in zip(sem, conf))
    np.testing.assert_array_equal(hist, expected.numpy())
    for q in (0.0, 0.3, 0.9):
        thr = class_thresholds(torch.from_numpy(hist), q).numpy()
        thr[3] = 255  # a class of which only level 255 is kept
        thr[4] = 0  # a class kept whole
        want = threshold(torch.from_numpy(sem), torch.from_numpy(conf), torch.from_numpy(thr)).numpy()
        np.testing.assert_array_equal(thresholded({"semantics": sem, "confidence": conf}, thr), want)
        np.testing.assert_array_equal(kept_mask(sem, conf, thr), want != 255)
        np.testing.assert_array_equal(confident_mask({"semantics": sem, "confidence": conf}, thr), want != 255)


def test_export_threads_write_the_same_files_and_pass_errors_on(tmp_path):
    from autolabel.store.labels import LabelStore
    from autolabel.store.export import export_occ3d
    from kernels.grid import GridSpec

    grid = GridSpec(range_min=(0, 0, 0), range_max=(2.0, 1.6, 0.8), voxel_size=0.4)  # 5 x 4 x 2
    n = 9
    store = LabelStore(tmp_path / "labels.zarr", grid, create=True)
    tokens = [f"t{i}" for i in range(n)]
    arrays = store.create_round(0, tokens, [f"s{i % 2}" for i in range(n)], {"checkpoint_sha256": "x"})
    rng = np.random.default_rng(1)
    for i in range(n):
        if i == 4:
            continue  # not done: not exported
        sem = rng.integers(0, 18, grid.shape).astype(np.uint8)
        sem[0, 0, 0] = 255
        frame = {"semantics": sem, "confidence": rng.integers(0, 256, grid.shape).astype(np.uint8)}
        frame.update({k: rng.integers(0, 2, grid.shape).astype(np.uint8) for k in ("mask_camera", "mask_lidar")})
        arrays.write(i, **frame)
    summaries = [export_occ3d(store, 0, tmp_path / f"w{w}", 0.3, progress=False, workers=w) for w in (1, 3)]
    assert summaries[0]["kept_in_mask_camera"] == summaries[1]["kept_in_mask_camera"] and summaries[0]["frames"] == 8
    files = [sorted((tmp_path / f"w{w}" / "gts").rglob("labels.npz")) for w in (1, 3)]
    assert len(files[0]) == 8 and [p.relative_to(tmp_path / "w1") for p in files[0]] == [
        p.relative_to(tmp_path / "w3") for p in files[1]
    ]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(*files))
    (tmp_path / "bad" / "gts" / "s1" / "t5" / "labels.npz").mkdir(parents=True)  # a folder where a file goes
    with pytest.raises(OSError):
        export_occ3d(store, 0, tmp_path / "bad", 0.3, progress=False, workers=2)
    assert not (tmp_path / "bad" / "export.json").exists()


def _labels_round(path: Path, grid, n: int, monkeypatch, with_histogram: bool = True):
    """A label store with round 0 of n frames of random labels (frame 4 not done); with_histogram False makes
    the round as stores before 2026-11-30 had it (the four label arrays only)."""
    from autolabel.store import labels

    store = labels.LabelStore(path, grid, create=True)
    tokens = [f"t{i}" for i in range(n)]
    with monkeypatch.context() as m:
        if not with_histogram:  # the group as the code before stored histograms created it
            m.setattr(labels, "round_specs", lambda root, k, grid: labels.label_specs(grid))
        arrays = store.create_round(0, tokens, [f"s{i % 2}" for i in range(n)], {"checkpoint_sha256": "x"})
    rng = np.random.default_rng(1)
    writer = ShardWriter(arrays, [i for i in range(n) if i != 4])
    for i in range(n):
        if i == 4:
            continue
        sem = rng.integers(0, 18, grid.shape).astype(np.uint8)
        sem[rng.random(grid.shape) < 0.2] = 255
        frame = {"semantics": sem, "confidence": rng.integers(0, 256, grid.shape).astype(np.uint8)}
        frame.update({k: rng.integers(0, 2, grid.shape).astype(np.uint8) for k in ("mask_camera", "mask_lidar")})
        writer.add(i, **frame)
    return store


def test_a_round_stores_each_frames_histogram_and_export_sums_them(tmp_path, monkeypatch):
    """Writers hand over the four label arrays; the round derives each frame's (class, confidence level)
    histogram on write, and the round's histogram is their sum: what counting the frames again gives, so the
    export's thresholds and files are those of a round without stored histograms (an older store), byte for
    byte."""
    from autolabel.store import export as ex
    from autolabel.store.confidence import level_histogram
    from kernels.grid import GridSpec

    monkeypatch.setenv("AUTOLABEL_SHARD_FRAMES", "3")  # several shards, the last one short
    grid = GridSpec(range_min=(0, 0, 0), range_max=(2.0, 1.6, 0.8), voxel_size=0.4)  # 5 x 4 x 2
    new = _labels_round(tmp_path / "new.zarr", grid, 10, monkeypatch)
    old = _labels_round(tmp_path / "old.zarr", grid, 10, monkeypatch, with_histogram=False)
    rn, ro = new.round(0), old.round(0)
    assert "histogram" in rn.specs and "histogram" not in ro.specs and set(rn.inputs) == set(ro.specs)
    assert rn.shard_frames == 3 and not rn.done()[4]
    for i in np.flatnonzero(rn.done()):
        np.testing.assert_array_equal(
            rn.read(i, "histogram"), level_histogram(rn.read(i, "semantics"), rn.read(i, "confidence"))
        )
    counted = ex.round_histogram(ro)  # the older round: counted from its frames
    np.testing.assert_array_equal(ex.round_histogram(rn), counted)
    assert counted.sum() == sum(int((rn.read(i, "semantics") != 255).sum()) for i in np.flatnonzero(rn.done()))
    for name, store in (("new", new), ("old", old)):
        ex.export_occ3d(store, 0, tmp_path / f"out_{name}", 0.3, progress=False)
    a, b = (json.loads((tmp_path / f"out_{n}" / "export.json").read_text()) for n in ("new", "old"))
    assert a["thresholds"] == b["thresholds"] and a["kept_in_mask_camera"] == b["kept_in_mask_camera"]
    files = [sorted((tmp_path / f"out_{n}" / "gts").rglob("labels.npz")) for n in ("new", "old")]
    assert len(files[0]) == 9 and all(x.read_bytes() == y.read_bytes() for x, y in zip(*files))
    # resuming an older round keeps its layout: no histogram array is added to it
    tokens, scenes = [f"t{i}" for i in range(10)], [f"s{i % 2}" for i in range(10)]
    again = old.create_round(0, tokens, scenes, {"checkpoint_sha256": "x"})
    assert "histogram" not in again.specs and "histogram" not in old.root["round_0"]


def test_reopening_with_other_settings_names_the_fields_that_differ(tmp_path):
    """A fused round resumed under other fusion settings (a dict of 30 fields) is refused with the fields that
    differ, not both dicts whole; a field the store lacks was added to the code after the store was written."""
    tokens = ["t0", "t1"]

    def group(settings: dict) -> FrameArrays:
        return FrameArrays.create_or_open(
            open_root(tmp_path / "s.zarr", "a"), "g", SPECS, tokens, {"fusion": settings}, ("fusion",), "store s"
        )

    group({"window": 3, "cluster_vote": 4.0})
    group({"window": 3, "cluster_vote": 4.0})  # the same settings: reopened
    with pytest.raises(DataError) as err:
        group({"window": 3, "cluster_vote": 2.0, "vote_rule": "evidence"})
    assert str(err.value) == (
        "store s: was written with fusion.cluster_vote = 4.0, this run has 2.0, fusion.vote_rule = absent (the "
        "store's code predates the field), this run has 'evidence'; use another store / cache path or delete the "
        "old one"
    )
    # a store without the attribute: the values whole, the store's named as absent
    FrameArrays.create_or_open(open_root(tmp_path / "t.zarr", "a"), "g", SPECS, tokens, {}, (), "store t")
    absent = r"fusion = absent \(the store's code predates the field\), this run has \{'window': 3\}"
    with pytest.raises(DataError, match=r"store t: was written with " + absent):
        FrameArrays.create_or_open(
            open_root(tmp_path / "t.zarr", "a"), "g", SPECS, tokens, {"fusion": {"window": 3}}, ("fusion",), "store t"
        )
