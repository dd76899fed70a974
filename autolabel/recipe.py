"""Recipes: YAML files that map onto typed dataclasses.

A recipe has one section per stage; every key is optional (the defaults are the dataclasses' defaults)
and unknown keys or bad values are errors naming the key. `load_recipe` also applies ``--set`` overrides
and resolves the run folder; `save_recipe` writes the resolved recipe beside the run's outputs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from occnet.config import LossConfig, NetworkConfig, RenderConfig, TrainConfig

from .active.config import PROPAGATE_MODES, SelectionConfig, check_region_budget
from .dts.config import DTSConfig
from .config_io import apply_overrides, from_dict, load_yaml, to_dict
from .errors import DataError
from .fusion.config import FusionConfig
from .supervision.config import SupervisionConfig
from .synth.writer import SynthConfig

RESOLVED_RECIPE = "recipe.yaml"


@dataclass
class DataConfig:
    """Where the frames come from. With `synth` set and no dataroot, the synthetic world is generated
    into the run folder's ``world/`` on first use."""

    dataroot: Optional[str] = None
    version: str = "v1.0-mini"
    sweeps: int = 0  # earlier lidar sweeps accumulated into the depth maps
    aux_frames: int = 0  # neighbouring keyframes per side whose rays also supervise (render.aux_rays_per_frame)
    train_scenes: Optional[list[str]] = None  # None: every scene not in val_scenes
    val_scenes: list[str] = field(default_factory=list)  # held out from training, evaluated
    synth: Optional[SynthConfig] = None

    def __post_init__(self) -> None:
        if self.dataroot is None and self.synth is None:
            raise ValueError("set dataroot (a dataset in nuScenes layout) or synth (generate the synthetic world)")
        if self.sweeps < 0 or self.aux_frames < 0:
            raise ValueError("sweeps and aux_frames must be >= 0")
        if self.train_scenes is not None and set(self.train_scenes) & set(self.val_scenes):
            raise ValueError(
                f"train_scenes and val_scenes overlap: {sorted(set(self.train_scenes) & set(self.val_scenes))}"
            )


ANNOTATORS = ("oracle", "folder")


@dataclass
class RoundsConfig:
    """The recipe's ``rounds`` section."""

    count: int = 1  # labelling rounds; every round but the last selects frames for annotation
    annotator: str = (
        "folder"  # folder: real annotations in annotations_dir; oracle (named only): copies gts/ (simulation)
    )
    annotations_dir: Optional[str] = (
        None  # folder: <dir>/round_<K>/ holds the annotators' gts/ tree; None: <run>/annotations
    )
    oracle_on_real_data: bool = (
        False  # allow the oracle on a dataset that is not a synthetic world (a simulation study)
    )
    export_drop_quantile: float = 0.3
    # manual labels carried to the other keyframes of their scene for training (autolabel.active.propagate):
    # none, static (static classes) or static_free (and free space)
    propagate: str = "none"
    # the same for the exported dataset: carried classes over the pseudo-labels of the scene's other keyframes
    # (carried free space never clears an occupied pseudo-label; +1.3 mIoU of the export at 5% annotated on the
    # test world, BENCHMARKS.md 2026-11-30)
    export_propagate: str = "static_free"

    def __post_init__(self) -> None:
        for key in ("propagate", "export_propagate"):
            if getattr(self, key) not in PROPAGATE_MODES:
                raise ValueError(f"rounds.{key} must be one of {PROPAGATE_MODES}, got {getattr(self, key)!r}")
        if not 0 <= self.export_drop_quantile < 1:
            raise ValueError(f"rounds.export_drop_quantile must be in [0, 1), got {self.export_drop_quantile}")
        if self.count < 1:
            raise ValueError("rounds.count must be >= 1")
        if self.annotator not in ANNOTATORS:
            raise ValueError(f"rounds.annotator must be one of {ANNOTATORS}, got {self.annotator!r}")


@dataclass
class Recipe:
    name: str = "recipe"
    out: Optional[str] = None  # run folder; None: runs/<name>
    device: str = "auto"  # training / inference device: auto, cpu, cuda, cuda:N
    data: Optional[DataConfig] = None  # required: where the frames come from
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    # 3D cross-entropy weighs 1 by default: it acts only on frames with ingested manual labels
    loss: LossConfig = field(default_factory=lambda: LossConfig(labels_3d=1.0))
    # the student sees the LiDAR depth prior on half of its frames: the depth-aware DTS teacher (dts.depth_aware, on)
    # is the EMA of its weights and labels with the prior; a teacher made of a student that never saw it scored 22.5
    # mIoU on the held-out scenes, one made of a student that did 32.5 (test world, BENCHMARKS.md 2026-12-02)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(depth_prior_share=0.5))
    dts: DTSConfig = field(default_factory=DTSConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty folder-safe string, got {self.name!r}")
        if self.data is None:
            raise ValueError("the data section is required: set data.dataroot (nuScenes layout) or data.synth")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        check_region_budget(self.selection, self.network.grid.shape)  # region budgets count the grid's voxels
        if not self.fusion.enabled and (self.loss.fused_3d > 0 or self.dts.evidence == "fusion"):
            raise ValueError(
                "loss.fused_3d > 0 and dts.evidence: fusion read the fused labels: set fusion.enabled: true"
            )
        if not self.fusion.enabled and self.selection.strategy == "fusion":
            raise ValueError("selection.strategy: fusion ranks by the fused labels: set fusion.enabled: true")

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    @property
    def dataroot(self) -> Path:
        return Path(self.data.dataroot) if self.data.dataroot else self.run_dir / "world"

    @property
    def version(self) -> str:
        return self.data.synth.version if self.data.dataroot is None and self.data.synth else self.data.version

    @property
    def store_path(self) -> Path:
        return self.run_dir / "labels.zarr"

    def round_dir(self, k: int) -> Path:
        return self.run_dir / f"round_{k}"

    def delivery_dir(self, k: int) -> Path:
        """Where the folder annotator's round-k delivery goes (``gts/<scene>/<token>/labels.npz`` inside):
        ``rounds.annotations_dir/round_<k>`` (a relative path is taken from the working directory, like
        every path of a recipe), else ``<run>/annotations/round_<k>``; absolute, so that the manifest and
        the waiting message name one folder whatever directory the annotators read them from."""
        d = self.rounds.annotations_dir
        return ((Path(d) if d else self.run_dir / "annotations") / f"round_{k}").absolute()

    @property
    def fusion_path(self) -> Path:
        """The fused labels of the training frames (a label store, round 0), with fusion.enabled."""
        return Path(self.fusion.store) if self.fusion.store else self.run_dir / "fusion.zarr"

    @property
    def cache_path(self) -> Path:
        return Path(self.supervision.cache) if self.supervision.cache else self.run_dir / "supervision.zarr"

    def plain(self) -> dict:
        """The recipe as plain data with every value in its field's type. A default such as
        ``budget: float = 10`` stays the integer 10 until the recipe is saved and read back (10.0); going
        through the typed dataclasses once makes the data, and so the digest, the same before and after."""
        return to_dict(from_dict(Recipe, to_dict(self)))

    def digest(self) -> str:
        """Short hash of the resolved recipe (provenance)."""
        return hashlib.sha256(json.dumps(self.plain(), sort_keys=True).encode()).hexdigest()[:12]


# Which recipe keys (a section or section.key) each stage of `autolabel run` reads. A run folder can be
# continued with a changed recipe as long as no stage already done read a changed key. Not listed, so
# free to change: name, out (the folder is the run), device (the same run may resume on another
# machine), rounds.count (a finished run can be extended).
STAGE_READS: dict[str, tuple[str, ...]] = {
    "data": ("data.dataroot", "data.version", "data.synth", "network.grid"),
    "supervise": ("data.dataroot", "data.version", "data.synth", "data.sweeps", "supervision", "network.image_size"),
    "fuse": ("data", "supervision", "network.grid", "fusion"),
    "train": ("data", "supervision", "network", "render", "loss", "train", "dts", "fusion", "rounds.propagate"),
    "label": ("data", "supervision", "network", "dts", "fusion"),
    "evaluate": ("data", "network", "render", "dts", "rounds.export_drop_quantile"),
    "export": ("data", "network.grid", "rounds.export_drop_quantile", "rounds.export_propagate"),
    "select": ("data", "supervision", "network", "render", "dts", "selection"),
    "ingest": ("rounds.annotator", "rounds.annotations_dir", "rounds.oracle_on_real_data"),
    "report": ("data", "network", "render", "dts", "rounds.export_drop_quantile", "selection"),
}


def stage_kind(stage: str) -> str:
    """``round_3/train`` -> ``train``."""
    return stage.rsplit("/", 1)[-1]


def _lookup(plain: dict, key: str):
    node = plain
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _changed(a, b, key: str) -> list[str]:
    """The leaf keys under `key` whose values differ (a whole list counts as one value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [leaf for k in sorted(set(a) | set(b)) for leaf in _changed(a.get(k), b.get(k), f"{key}.{k}")]
    return [] if a == b else [key]


def forbidding_changes(old: Recipe, new: Recipe, done_stages) -> list[str]:
    """``key (read by stage)`` for every key whose value differs between `old` and `new` and that a
    stage in `done_stages` read; empty when `new` may continue the run."""
    a, b = old.plain(), new.plain()
    out: dict[str, str] = {}
    for stage in done_stages:
        for key in STAGE_READS.get(stage_kind(stage), ()):
            for leaf in _changed(_lookup(a, key), _lookup(b, key), key):
                out.setdefault(leaf, stage)
    return [f"{key} (read by {stage})" for key, stage in out.items()]


def load_recipe(path: str | Path, overrides: list[str] | None = None, out: str | None = None) -> Recipe:
    """Read a recipe YAML, apply ``key=value`` overrides and an --out folder, validate everything."""
    data = apply_overrides(load_yaml(path), list(overrides or []))
    if out is not None:
        data["out"] = str(out)
    try:
        return from_dict(Recipe, data)
    except DataError as exc:
        raise DataError(f"recipe {path}: {exc}") from None


def save_recipe(recipe: Recipe, path: Path) -> Path:
    from occnet.atomic import atomic_write

    text = yaml.safe_dump(recipe.plain(), sort_keys=False)
    return atomic_write(path, lambda fh: fh.write(text.encode()))
