"""A Zarr v3 group of per-frame arrays with a token list and a per-frame ``done`` flag.

Layout (every array's first axis is the frame index i, in the order of ``tokens``)::

    <group>/tokens      (N,) str
    <group>/done        (N,) bool, one chunk per frame, S frames per shard file
    <group>/<name>      (N, *shape) one chunk per frame, S frames per shard file, for each ArraySpec

Sharding (issue 23): a nuScenes trainval round has 34,149 frames; one file per frame and array would be
~170,000 files per round. Frames are grouped S to a shard file (Zarr v3 sharding codec; S from
`frames_per_shard`, about SHARD_BYTES of raw data per shard), so a round is N / S files per array.

Why writes stay safe: zarr's local store writes every file atomically (temp file + rename), so a shard
file is always either its old or its new version: writing frames of a shard rewrites the shard
(read-modify-write) but never leaves other frames half-written. ``done[i]`` is set only after every
array of frame i is written, so a crash mid-write leaves the frame not done and a rerun writes it again;
finished frames keep their bytes. `ShardWriter` buffers frames until every pending frame of a shard is
computed and writes them in one write per array (not S read-modify-writes of a growing file), and
ranks split the work by shard (`pending_frames`), so two processes never rewrite the same shard file.
Groups written before sharding (one file per chunk) are read and written as before (S = 1).
"""

from __future__ import annotations

import errno
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class ArraySpec:
    """One per-frame array: name, per-frame shape, numpy dtype, fill value of unwritten frames."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    fill: Any = 0


# Raw bytes of one shard's frames (all arrays of a group): what a writer (`ShardWriter`) holds in memory
# before a shard write. 512 MiB: a nuScenes trainval round (200x200x16, 4 uint8 arrays and the per-frame
# confidence histogram) is 208 frames per shard, 165 shards, 999 files (issue 23's target: <= 1,000); 8 ranks of
# an 8-GPU node hold 4 GiB in all.
SHARD_BYTES = 512 << 20
MAX_FRAMES_PER_SHARD = 1024


def frame_bytes(specs: Sequence[ArraySpec]) -> int:
    """Raw bytes of one frame of the specs' arrays."""
    return sum(int(np.prod(sp.shape)) * np.dtype(sp.dtype).itemsize for sp in specs)


def frames_per_shard(specs: Sequence[ArraySpec], n: int) -> int:
    """S frames per shard file: about SHARD_BYTES of raw data for all the specs' arrays of S frames
    (AUTOLABEL_SHARD_FRAMES overrides, e.g. for tests that need several shards from a few frames)."""
    if os.environ.get("AUTOLABEL_SHARD_FRAMES"):
        s = int(os.environ["AUTOLABEL_SHARD_FRAMES"])
    else:
        s = min(MAX_FRAMES_PER_SHARD, SHARD_BYTES // max(frame_bytes(specs), 1))
    return max(1, min(s, max(n, 1)))


def _zarr():
    import zarr  # imported lazily: only commands that touch stores need it

    return zarr


def jsonable(value: Any) -> Any:
    """Attributes compare after a JSON round trip (tuples become lists)."""
    import json

    return json.loads(json.dumps(value))


ABSENT = object()  # an attribute the store lacks (`mismatch`'s stored value)


def mismatch(key: str, stored: Any, wanted: Any) -> str:
    """`key = stored, this run has wanted`; for two dicts (fusion's settings: 30 of them) only the fields that
    differ. A field the store lacks (stored ABSENT, or a key missing from its dict) is named as such: written by
    code from before that field existed."""
    older = "absent (the store's code predates the field)"
    if not (isinstance(stored, dict) and isinstance(wanted, dict)):
        return f"{key} = {older if stored is ABSENT else repr(stored)}, this run has {wanted!r}"

    def show(d: dict, k: str, absent: str) -> str:
        return repr(d[k]) if k in d else absent

    fields = [k for k in {**stored, **wanted} if show(stored, k, older) != show(wanted, k, "absent")]
    return ", ".join(f"{key}.{k} = {show(stored, k, older)}, this run has {show(wanted, k, 'absent')}" for k in fields)


class FrameArrays:
    """Open with `FrameArrays.create_or_open`; write a frame with `write(i, **arrays)`."""

    def __init__(self, group, specs: Sequence[ArraySpec], where: str):
        self.group = group
        self.specs = {s.name: s for s in specs}
        self.where = where
        try:
            self.tokens: tuple[str, ...] = tuple(str(t) for t in group["tokens"][:])
        except Exception as exc:  # zarr / numcodecs raise many types for a damaged chunk
            raise DataError(
                f"{where}: array 'tokens' of group {group.path!r} cannot be read ({exc}); delete the group "
                f"to recompute it, or restore it"
            ) from None
        self._index = {t: i for i, t in enumerate(self.tokens)}
        self._arrays: dict[str, Any] = {}  # opened zarr arrays: their metadata is fixed once the group exists

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def create_or_open(
        cls,
        root,
        path: str,
        specs: Sequence[ArraySpec],
        tokens: Sequence[str],
        attrs: Mapping[str, Any],
        must_match: Iterable[str],
        where: str,
        shard_frames: int | None = None,
    ) -> "FrameArrays":
        """Open group `path` under zarr group `root`, creating it when absent.

        An existing group must hold the same tokens and the same values of the `must_match` attributes
        (grid, class table, image size, ...): otherwise DataError naming the field, and nothing is changed.
        A new group holds `shard_frames` frames per shard file (None: `frames_per_shard`).
        """
        attrs = jsonable(dict(attrs))
        if path in root and "tokens" not in root[path]:
            del root[path]  # a crash during creation: nothing was written into it yet (tokens come last)
        if path in root:
            group = root[path]
            arr = cls(group, specs, where)
            if arr.tokens != tuple(tokens):
                raise DataError(
                    f"{where}: holds {len(arr.tokens)} other frames than the {len(tokens)} of this dataset; "
                    f"use another store / cache path or delete the old one"
                )
            found = dict(group.attrs)
            for key in must_match:
                if found.get(key) != attrs.get(key):
                    raise DataError(
                        f"{where}: was written with {mismatch(key, found.get(key, ABSENT), attrs.get(key))}; "
                        f"use another store / cache path or delete the old one"
                    )
            for s in specs:
                if s.name not in group or tuple(group[s.name].shape) != (len(tokens), *s.shape):
                    raise DataError(
                        f"{where}: array {s.name!r} is missing or has the wrong shape; delete the group and rerun"
                    )
            return arr
        group = root.create_group(path)
        n = len(tokens)
        S = max(1, min(shard_frames, max(n, 1))) if shard_frames else frames_per_shard(specs, n)
        # Arrays first, attributes and tokens last: a group without `tokens` is treated as unfinished below.
        for s in specs:
            group.create_array(
                s.name,
                shape=(n, *s.shape),
                dtype=s.dtype,
                chunks=(1, *s.shape),
                shards=(S, *s.shape),
                fill_value=s.fill,
            )
        group.create_array("done", shape=(n,), dtype=bool, chunks=(1,), shards=(S,), fill_value=False)
        group.attrs.update(attrs)
        tok = group.create_array("tokens", shape=(n,), dtype=str, chunks=(max(n, 1),))
        if n:
            tok[:] = np.asarray(list(tokens), dtype=object)
        return cls(group, specs, where)

    @classmethod
    def open(cls, root, path: str, specs: Sequence[ArraySpec], where: str) -> "FrameArrays":
        if path not in root:
            raise DataError(f"{where}: not found")
        group = root[path]
        if "tokens" not in group:
            raise DataError(f"{where}: incomplete (created but never initialised); delete it and rerun")
        return cls(group, specs, where)

    # ---- frames -------------------------------------------------------------------------------
    @property
    def inputs(self) -> dict[str, ArraySpec]:
        """The arrays a writer hands over (`write`, `ShardWriter.add`): all of them here; a subclass may derive
        some from the others when a frame is written (`store.labels.RoundArrays`)."""
        return self.specs

    def __len__(self) -> int:
        return len(self.tokens)

    def has(self, token: str) -> bool:
        return token in self._index

    def index(self, token: str) -> int:
        try:
            return self._index[token]
        except KeyError:
            raise DataError(f"{self.where}: sample token {token!r} is not in it") from None

    def _array(self, name: str):
        """The zarr array `name`, opened once (opening reads its zarr.json from the store every time)."""
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays[name] = self.group[name]
        return arr

    def _get(self, name: str, i: int | slice) -> np.ndarray:
        """arrays[name][i]; a chunk that cannot be decoded is a DataError naming the array, group and frame."""
        try:
            return np.asarray(self._array(name)[i])
        except Exception as exc:  # zarr / numcodecs raise many types for a damaged chunk or metadata
            frame = f"frame {self.tokens[i]}" if isinstance(i, int) else "one of its frames"
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(
                f"{self.where}: array {name!r} of group {self.group.path!r}, {frame}: chunk cannot be read "
                f"({detail}); it was damaged outside this program — delete the group to recompute it, "
                f"or restore it"
            ) from None

    @property
    def shard_frames(self) -> int:
        """S: frames per shard file (1 for groups written before sharding: one file per frame)."""
        shards = self._array("done").shards
        return int(shards[0]) if shards else 1

    def shard_of(self, i: int) -> int:
        return int(i) // self.shard_frames

    def _chunk_exists(self, name: str, i: int) -> bool:
        """Frame i's file (its shard's, or its chunk's in an unsharded group) exists."""
        from zarr.core.sync import sync

        arr = self._array(name)
        key = arr.metadata.encode_chunk_key((self.shard_of(i),) + (0,) * (arr.ndim - 1))
        return bool(sync((arr.store_path / key).exists()))

    def file_count(self) -> int:
        """Files of the group on disk (metadata included): what a fleet-size store must keep small."""
        from zarr.core.sync import sync

        async def count() -> int:
            return len([k async for k in self.group.store_path.store.list_prefix(self.group.path + "/")])

        return sync(count())

    def done(self) -> np.ndarray:
        """(N,) bool: which frames are completely written."""
        return np.asarray(self._get("done", slice(None)), dtype=bool)

    def is_done(self, i: int) -> bool:
        """Frame i's flag alone (one chunk read; `done()` reads one chunk per frame of the store)."""
        return bool(self._get("done", i))

    def write(self, i: int, **arrays: np.ndarray) -> None:
        """Write every array of frame i, then mark it done. Disk-full errors leave the frame not done.
        In a sharded group this rewrites frame i's shard file: to write many frames, use `ShardWriter`."""
        self.write_frames([i], **{name: np.asarray(v)[None] for name, v in arrays.items()})

    def write_frames(self, indices: Sequence[int], **arrays: np.ndarray) -> None:
        """Write frames `indices` (arrays stacked along a first axis in that order): one write per array
        and shard, then their done flags. Disk-full errors leave the frames not done."""
        missing = set(self.specs) - set(arrays)
        if missing or set(arrays) - set(self.specs):
            raise ValueError(f"{self.where}: write needs exactly {sorted(self.specs)}, got {sorted(arrays)}")
        import zarr

        idx = np.asarray(indices, dtype=np.int64)
        if not len(idx):
            return
        try:
            # a frame whose map equals the fill value (every confidence 0) still gets its chunk: read() tells a
            # missing chunk of a done frame from damage, so every done frame must have one
            with zarr.config.set({"array.write_empty_chunks": True}):
                for name, value in arrays.items():
                    spec = self.specs[name]
                    value = np.asarray(value)
                    if value.shape != (len(idx), *spec.shape):
                        raise ValueError(
                            f"{self.where}: frame {self.tokens[int(idx[0])]} array {name} has shape "
                            f"{value.shape[1:]}, expected {spec.shape}"
                        )
                    self._put(name, idx, value.astype(spec.dtype, copy=False))
            self._put("done", idx, np.ones(len(idx), bool))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DataError(
                    f"{self.where}: disk full while writing frame {self.tokens[int(idx[0])]}; "
                    f"{int(self.done().sum())} frames are safely stored — free space and rerun to continue"
                ) from exc
            raise

    def _put(self, name: str, idx: np.ndarray, value: np.ndarray) -> None:
        arr = self._array(name)
        if len(idx) == 1:
            arr[int(idx[0])] = value[0]
        else:
            # one write per run of consecutive frames (whole shards are written without reading them); zarr's
            # orthogonal writes (arr.oindex[idx]) fail for sharded arrays of more than one dimension
            cuts = np.flatnonzero(np.diff(idx) != 1) + 1
            for run, rows in zip(np.split(idx, cuts), np.split(np.arange(len(idx)), cuts)):
                arr[int(run[0]) : int(run[-1]) + 1] = value[rows[0] : rows[-1] + 1]

    def check_complete(self) -> None:
        """Every done frame has a chunk in every array: a command that writes one file per frame (export)
        checks this first, so that a missing chunk stops it before it has written anything."""
        seen: set[tuple[str, int]] = set()
        for i in np.flatnonzero(self.done()):
            for name in self.specs:
                if (name, self.shard_of(i)) in seen:
                    continue
                seen.add((name, self.shard_of(i)))
                if not self._chunk_exists(name, int(i)):
                    raise DataError(
                        f"{self.where}: array {name!r} of group {self.group.path!r}, frame {self.tokens[i]} "
                        f"is marked done but its chunk is missing; delete the group to recompute it, or "
                        f"restore the chunk"
                    )

    def read(self, i: int, name: str) -> np.ndarray:
        # Zarr answers a missing chunk with the fill value: a deleted chunk of a finished frame would be
        # read as an all-255 (or all-0) frame without a word, so it is checked for
        if not self._chunk_exists(name, i) and self.is_done(i):
            raise DataError(
                f"{self.where}: array {name!r} of group {self.group.path!r}, frame {self.tokens[i]} is marked "
                f"done but its chunk is missing; delete the group to recompute it, or restore the chunk"
            )
        return self._get(name, i)

    def read_frames(self, start: int, stop: int, names: Sequence[str], done: np.ndarray | None = None) -> dict:
        """{name: frames start..stop-1 of array name}, one read per array: the frames of a shard decode together
        instead of one read (and one shard-file check) per frame and array. Like `read`, a done frame whose file
        is missing is a DataError (checked once per shard file and call, never cached: the files may change
        between calls), and a chunk that cannot be decoded names its frame. `done`: the group's `done()`, if the
        caller has it."""
        start, stop = int(start), int(stop)
        if not 0 <= start < stop <= len(self):
            raise ValueError(f"{self.where}: frames {start}..{stop - 1} outside 0..{len(self) - 1}")
        done = self.done() if done is None else done
        S = self.shard_frames
        out = {}
        for name in names:
            for s in range(start // S, (stop - 1) // S + 1):
                lo, hi = max(start, s * S), min(stop, (s + 1) * S)
                if done[lo:hi].any() and not self._chunk_exists(name, lo):
                    i = lo + int(np.argmax(done[lo:hi]))
                    raise DataError(
                        f"{self.where}: array {name!r} of group {self.group.path!r}, frame {self.tokens[i]} is "
                        f"marked done but its chunk is missing; delete the group to recompute it, or restore the chunk"
                    )
            try:
                out[name] = self._get(name, slice(start, stop))
            except DataError:
                for i in range(start, stop):  # name the frame whose chunk cannot be decoded
                    self._get(name, i)
                raise
        return out

    def iter_frames(
        self, indices: Sequence[int], names: Sequence[str], block: int = 32, done: np.ndarray | None = None
    ):
        """Yield (i, {name: frame i of array name}) for `indices` in increasing order, read `block` frames at a
        time (within a shard) with `read_frames`: memory is `block` frames of the arrays, whatever S is."""
        idx = np.unique(np.asarray(indices, dtype=np.int64))
        done = self.done() if done is None else done
        S = self.shard_frames
        k = 0
        while k < len(idx):
            start = int(idx[k])
            end = min((start // S + 1) * S, start + block)  # never beyond this shard nor `block` frames
            j = k + int(np.searchsorted(idx[k:], end))
            stop = int(idx[j - 1]) + 1
            frames = self.read_frames(start, stop, names, done)
            for i in idx[k:j]:
                yield int(i), {name: frames[name][int(i) - start] for name in names}
            k = j

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)


def pending_frames(arrays: FrameArrays, rank: int = 0, world: int = 1) -> list[int]:
    """Frames not yet done that this rank computes: whole shards per rank (shard % world == rank), so that
    two processes never rewrite the same shard file."""
    S = arrays.shard_frames
    return [int(i) for i in np.flatnonzero(~arrays.done()) if (i // S) % world == rank]


class ShardWriter:
    """Collects frames computed in any order and writes each shard's frames together once every one of
    them (among `pending`) has arrived. Frames still buffered when the run stops are not done, so a
    rerun computes them again; nothing already written is touched.

    Memory: a shard's frames are copied on arrival into one preallocated block per array (its pending
    frames, at most S), which is written as it is: a writer holds at most the raw bytes of the shards it
    has started (one at a time when frames arrive in order), about SHARD_BYTES, and no second copy when it
    writes them (it used to keep the frames' own arrays and stack them for the write: twice that).

    background=True overlaps the writes with the caller's work (labelling: the GPU labels the next shard's
    frames while a thread compresses this one): then about twice SHARD_BYTES (the shard in flight and the
    one filling). Use it as a context manager (or call `close`), so that the last write has finished, and
    its frames are done, when the caller returns or fails."""

    def __init__(self, arrays: FrameArrays, pending: Sequence[int], background: bool = False):
        self.arrays = arrays
        self.expected: dict[int, list[int]] = {}
        for i in sorted({int(i) for i in pending}):
            self.expected.setdefault(arrays.shard_of(i), []).append(i)
        # shard -> (its pending frames' rows in the blocks, {name: (frames, *shape) block}, frames arrived)
        self.buffer: dict[int, tuple[dict[int, int], dict[str, np.ndarray], set[int]]] = {}
        # background=True: a full shard is compressed and written by one writer thread while the caller
        # computes the next frames (the codecs release the GIL); one write in flight at a time
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shard-writer") if background else None
        self._writing: Future | None = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.close()
        except Exception:
            if exc is None:
                raise
            # the body's error is the one to report; the failed write's frames stay not done
        return False

    def close(self) -> None:
        """Wait for the write in flight (background writers) and raise its error. Frames of shards still
        buffered are not written (not done: a rerun computes them again)."""
        try:
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _wait(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()

    def add(self, i: int, **arrays: np.ndarray) -> None:
        s = self.arrays.shard_of(i)
        if int(i) not in self.expected.get(s, ()):
            raise ValueError(f"{self.arrays.where}: frame {i} is not pending here")
        specs = self.arrays.inputs
        if set(arrays) != set(specs):
            raise ValueError(f"{self.arrays.where}: write needs exactly {sorted(specs)}, got {sorted(arrays)}")
        for name, value in arrays.items():
            if np.shape(value) != specs[name].shape:
                raise ValueError(
                    f"{self.arrays.where}: frame {self.arrays.tokens[int(i)]} array {name} has shape "
                    f"{np.shape(value)}, expected {specs[name].shape}"
                )
        if s not in self.buffer:
            frames = self.expected[s]
            blocks = {name: np.empty((len(frames), *sp.shape), sp.dtype) for name, sp in specs.items()}
            self.buffer[s] = ({f: r for r, f in enumerate(frames)}, blocks, set())
        rows, blocks, arrived = self.buffer[s]
        for name, value in arrays.items():
            blocks[name][rows[int(i)]] = value  # a copy: the caller may reuse its arrays
        arrived.add(int(i))
        if len(arrived) == len(rows):
            self._flush(s)

    def _flush(self, s: int) -> None:
        rows, blocks, _ = self.buffer.pop(s)
        del self.expected[s]
        if self._pool is None:
            self.arrays.write_frames(list(rows), **blocks)
            return
        self._wait()  # at most one shard in flight: memory stays at two shards' blocks
        self._writing = self._pool.submit(self.arrays.write_frames, list(rows), **blocks)

    @property
    def buffered(self) -> int:
        """Frames computed and not yet written."""
        return sum(len(arrived) for _, _, arrived in self.buffer.values())

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the blocks held for shards not yet written."""
        return sum(b.nbytes for _, blocks, _ in self.buffer.values() for b in blocks.values())


def open_root(path: str | Path, mode: str):
    """The zarr root group at `path` (mode 'r' for reading, 'a' for writing)."""
    path = Path(path)
    if mode == "r" and not (path / "zarr.json").is_file():
        raise DataError(f"{path}: not a Zarr store (no zarr.json)")
    try:
        return _zarr().open_group(str(path), mode=mode)
    except Exception as exc:  # zarr raises several types for unreadable metadata
        raise DataError(f"{path}: cannot open as a Zarr v3 group ({exc})") from exc
