"""``autolabel run``: the whole loop as resumable stages (the stages themselves are in autolabel.stages).

data -> 2D supervision (cached) -> per round: train -> label (pseudo-labels into the store) -> evaluate
(where ground truth exists) -> export (Occ3D) -> report -> select -> ingest (simulated oracle or a
folder of real annotations) -> next round. Each finished stage is recorded in ``<run>/stages.json``
(written atomically) and skipped on a rerun; the stages themselves resume inside (training from its
checkpoint, labelling from the store's done flags), so a crash or Ctrl-C loses at most the work since
the last checkpoint or frame.

Under torchrun (several processes) the 2D supervision, training and labelling stages run on every rank
(sharded frames, DDP), and so does the pool scoring of selection (rank 0 then selects); the others (world,
evaluation, export, ingest, report) run on rank 0 while the rest wait at a barrier. Only rank 0 writes
``stages.json``; the other ranks read it back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from occnet import interrupt
from occnet.atomic import atomic_write
from occnet.distributed import barrier, is_main

from . import stages as steps
from .errors import AwaitingAnnotations, DataError, one_line
from .provenance import machine
from .recipe import RESOLVED_RECIPE, Recipe, forbidding_changes, load_recipe, save_recipe
from .stages.checks import check_annotator, check_backbone, check_dataroot
from .stages.inputs import export_dir
from .supervision.providers import check_models, resolve_device

STAGES_FILE = "stages.json"
STOPPED_FILE = "stopped.json"  # the stage that last stopped the run, and why (removed when a stage finishes)


class Stages:
    def __init__(self, run_dir: Path):
        self.path = run_dir / STAGES_FILE
        self.stopped = run_dir / STOPPED_FILE
        self.done: dict[str, dict] = read_stages(run_dir)

    def _record_stop(self, name: str, status: str, message: str) -> None:
        if is_main():
            text = json.dumps(
                {"stage": name, "status": status, "message": message, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                indent=1,
            )
            atomic_write(self.stopped, lambda fh: fh.write(text.encode()))

    def run(self, name: str, fn: Callable[[], dict | None], every_rank: bool = False) -> dict:
        """Run a stage once. every_rank: all processes run it (it shards its own work); otherwise rank 0
        runs it and the others wait. Rank 0 records the result (its own, for a sharded stage); a stage
        that raises is recorded in stopped.json (failed / waiting / interrupted, with the message)."""
        if name in self.done:
            return self.done[name]
        t0 = time.perf_counter()
        try:
            interrupt.check()
            result = (fn() or {}) if every_rank or is_main() else None
            interrupt.check()  # a Ctrl-C that the stage's code lost is still the stage's
        except AwaitingAnnotations as exc:
            self._record_stop(name, "waiting", one_line(exc))
            raise
        except KeyboardInterrupt:
            self._record_stop(name, "interrupted", "interrupted; rerun to resume")
            raise
        except Exception as exc:
            if interrupt.pending():  # an error Ctrl-C caused (a DataLoader worker it stopped) is the interrupt
                self._record_stop(name, "interrupted", "interrupted; rerun to resume")
                raise KeyboardInterrupt from None
            self._record_stop(name, "failed", f"{type(exc).__name__}: {one_line(exc)}")
            raise
        barrier()  # a sharded stage is finished when every rank is; a rank-0 stage before anyone goes on
        if is_main():
            self.done[name] = {**result, "seconds": round(time.perf_counter() - t0, 2), "machine": machine()}
            text = json.dumps(self.done, indent=1)
            atomic_write(self.path, lambda fh: fh.write(text.encode()))
            self.stopped.unlink(missing_ok=True)
        barrier()
        if not is_main():
            self.done = json.loads(self.path.read_text())
        return self.done[name]


def read_stages(run_dir: Path) -> dict[str, dict]:
    path = run_dir / STAGES_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc}); it is written atomically, so it was changed by hand or by "
            f"another program — restore it or delete the run folder"
        ) from None


def check_run_folder(recipe: Recipe) -> None:
    """A run folder may be continued by a recipe that differs from the saved one only in keys that no
    finished stage read (recipe.STAGE_READS): more rounds, a later stage's settings, another --out
    spelling of the same folder. Anything else is refused with the keys and the stages that read them."""
    saved = recipe.run_dir / RESOLVED_RECIPE
    if not saved.is_file():
        return
    try:
        old = load_recipe(saved)
    except DataError as exc:
        raise DataError(
            f"{recipe.run_dir} holds a run whose saved recipe cannot be read ({exc}); choose another --out"
        ) from None
    changes = forbidding_changes(old, recipe, read_stages(recipe.run_dir))
    if changes:
        raise DataError(
            f"{recipe.run_dir} holds a run of another recipe ({saved}): {', '.join(changes)} changed, and "
            f"finished stages used the old value; resume it with the same values, or choose another --out"
        )


def preflight(recipe: Recipe) -> None:
    """Every check of paths, models and recipe values that needs no work, before the run folder is
    written: a failing first run leaves nothing behind, and a resumed one nothing changed."""
    resolve_device(recipe.device)  # also joins the process group under torchrun before the first barrier
    check_dataroot(recipe)
    check_annotator(recipe)
    check_models(recipe.supervision)
    if "round_0/train" not in read_stages(recipe.run_dir):  # later rounds start from checkpoints, not the file
        check_backbone(recipe)
    check_run_folder(recipe)


def run_recipe(recipe: Recipe, progress: bool = True) -> dict:
    preflight(recipe)
    progress = progress and is_main()
    if is_main():
        recipe.run_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, recipe.run_dir / RESOLVED_RECIPE)  # the values the stages run from here on read
    barrier()
    stages = Stages(recipe.run_dir)
    stages.run("data", lambda: steps.prepare_data(recipe, progress))
    stages.run("supervise", lambda: steps.supervise(recipe, progress), every_rank=True)
    if recipe.fusion.enabled:
        stages.run("fuse", lambda: steps.fuse(recipe, progress), every_rank=True)  # sharded over ranks like labelling
    history = []
    for k in range(recipe.rounds.count):
        history.append(_round(recipe, k, stages, history, progress))
    return {"run_dir": str(recipe.run_dir), "rounds": history, "stages": stages.done}


def _round(recipe: Recipe, k: int, stages: Stages, history: list[dict], progress: bool) -> dict:
    p = f"round_{k}"
    stages.run(
        f"{p}/train",
        lambda: {key: v for key, v in steps.train(recipe, k, progress).items() if key != "last"},
        every_rank=True,
    )
    stages.run(f"{p}/label", lambda: steps.label(recipe, k, progress), every_rank=True)
    metrics = stages.run(f"{p}/evaluate", lambda: steps.evaluate(recipe, k, progress))
    exported = stages.run(f"{p}/export", lambda: steps.export(recipe, k, progress))
    entry = {
        "round": k,
        "labelled": metrics.get("labelled", 0),
        "labelled_voxels": metrics.get("labelled_voxels"),
        "val_miou": (metrics.get("val") or {}).get("miou"),
        "val_teacher_miou": (metrics.get("val_teacher") or {}).get("miou"),
        "pseudo_miou": (metrics.get("pseudo") or {}).get("miou"),
        "export": str(export_dir(recipe, k)),
    }
    last = k == recipe.rounds.count - 1
    if not last:
        stages.run(f"{p}/select", lambda: _selected(steps.select(recipe, k, progress=False)), every_rank=True)
        stages.run(f"{p}/ingest", lambda: steps.ingest(recipe, k))
    entry["report"] = stages.run(f"{p}/report", lambda: steps.report(recipe, k, metrics, history + [entry], exported))[
        "page"
    ]
    return entry


def _selected(selection: steps.Selection | None) -> dict:
    """The select stage's record (the other ranks, which only scored their share of the pool, record nothing)."""
    return selection.record() if selection is not None else {}


def summary_text(recipe: Recipe, result: dict) -> str:
    lines = [f"run {recipe.name} finished: {result['run_dir']}"]
    for r in result["rounds"]:
        val = f"val mIoU {r['val_miou']:.2f}" if r.get("val_miou") is not None else "val mIoU -"
        if r.get("val_teacher_miou") is not None:
            val += f" (labeller {r['val_teacher_miou']:.2f})"
        pseudo = (
            f"pseudo-label mIoU {r['pseudo_miou']:.2f}" if r.get("pseudo_miou") is not None else "pseudo-label mIoU -"
        )
        voxels = f" ({r['labelled_voxels']:,} labelled voxels)" if r.get("labelled_voxels") is not None else ""
        lines.append(f"  round {r['round']}: {r['labelled']} frames with manual 3D labels{voxels}; {val}; {pseudo}")
        lines.append(f"    Occ3D export {r['export']}/gts   report {r['report']}")
    lines.append(f"  pseudo-label store {recipe.store_path}   2D supervision cache {recipe.cache_path}")
    lines.append(
        f"  stages and timings {recipe.run_dir / STAGES_FILE}; rerunning resumes at the first unfinished stage"
    )
    return "\n".join(lines)
