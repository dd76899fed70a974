"""2D label providers: one interface, frame in, per-camera semantics + confidence out.

``provider.label(frame, rc)`` returns `LabelMaps`: semantics (N, h, w) uint8 (255 = none) and confidence
(N, h, w) float32 in [0, 1] for the frame's N cameras at the label resolution rc.out_hw (a resize / crop of
the camera images, `ResizeCrop`), and, where the maps carry them, runner-up names per pixel (the classifier's
next most probable classes and their confidences). Providers are picked by the recipe's ``supervision.provider``:

- ``precomputed``: label maps read from a folder (NPZ or PNG), the synthetic world's layout;
- ``sam_clip``: SAM automatic masks named by CLIP;
- ``sam2_clip``: SAM 2 automatic masks named by CLIP;
- ``sam3``: SAM 3 prompted with the vocabulary's phrases (masks, classes and scores from the model);
- ``sam_vlm``: SAM (or SAM 2) automatic masks named by Florence-2 (region-to-category likelihoods);
- ``grounded_sam``: OWL / Grounding DINO detector boxes -> SAM masks for objects, SAM + CLIP naming for stuff;
- ``lidarseg``: nuScenes-lidarseg point labels at the projected lidar pixels (RenderOcc's protocol).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch
from PIL import Image

from occnet.classes import IGNORE_ID, class_id

from ..data.frame import Frame
from ..data.transforms import ResizeCrop
from ..errors import DataError
from .config import IGNORE_KEY, LABEL_CLASSES, SupervisionConfig
from .lidar_depth import project_points
from .precomputed import LABELS_2D_DIR

PROVIDER_RUNNER_UPS = 2  # runner-up names a mask-naming provider gives per pixel (the cache keeps up to its R)


class LabelMaps(NamedTuple):
    """2D labels of N images: semantics (N, h, w) uint8 (255 = none), confidence (N, h, w) float32 in [0, 1]
    and, where the provider has them, runner-up names (N, R, h, w) uint8 (255 = none) with their confidences
    (N, R, h, w) float32 (the naming classifier's next most probable classes; None: the maps carry none). One
    image's maps have the same fields without N."""

    semantics: np.ndarray
    confidence: np.ndarray
    runner_ups: np.ndarray | None = None
    runner_up_confidence: np.ndarray | None = None


class LabelProvider(Protocol):
    name: str
    needs_images: bool  # False: the frame's JPEGs need not be decoded
    model_free: bool  # True: labels are read or projected, no network runs (frames are labelled in DataLoader workers)

    def label(self, frame: Frame, rc: ResizeCrop) -> LabelMaps: ...

    def provenance(self) -> dict: ...


def resolve_device(name: str) -> torch.device:
    """The recipe's device; under torchrun (WORLD_SIZE > 1) this joins the process group and returns the
    rank's own GPU (or the CPU with gloo)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from occnet.distributed import init_from_env

        return init_from_env(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"supervision.device is {name!r} but no CUDA GPU is available; use auto or cpu")
    return torch.device(name)


def _check_images(frame: Frame) -> None:
    for cam in frame.cameras:
        if cam.image.size == 0:
            raise ValueError(f"frame {frame.token}: images were not loaded")
        if tuple(cam.image.shape[:2]) != tuple(cam.image_size):
            raise DataError(
                f"sample {frame.token} {cam.name}: image is {cam.image.shape[1]}x{cam.image.shape[0]}, "
                f"its calibration is for {cam.image_size[1]}x{cam.image_size[0]}"
            )


def resize_labels(maps: LabelMaps, rc: ResizeCrop) -> LabelMaps:
    """Nearest-neighbour resize / crop of one image's native label maps ((H, W), runner-ups (R, H, W) if any);
    pixels the crop adds are 255 / 0."""
    sem, conf, runner_ups, runner_up_confidence = maps
    s = rc.apply_image(sem, Image.NEAREST)
    pad = rc.apply_image(np.ones_like(sem), Image.NEAREST) == 0
    s[pad] = IGNORE_ID
    c = rc.apply_image(conf.astype(np.float32), Image.NEAREST)
    c[s == IGNORE_ID] = 0
    if runner_ups is None:
        return LabelMaps(s, c)
    alt = np.stack([rc.apply_image(a, Image.NEAREST) for a in runner_ups])
    alt_c = np.stack([rc.apply_image(a.astype(np.float32), Image.NEAREST) for a in runner_up_confidence])
    alt[:, pad] = IGNORE_ID
    alt_c[alt == IGNORE_ID] = 0
    return LabelMaps(s, c, alt, alt_c)


def stack_maps(maps: list[LabelMaps]) -> LabelMaps:
    """The cameras' maps stacked along a first axis (runner-ups only where every camera has them)."""
    alt = all(m.runner_ups is not None for m in maps)
    return LabelMaps(
        np.stack([m.semantics for m in maps]),
        np.stack([m.confidence for m in maps]),
        np.stack([m.runner_ups for m in maps]) if alt else None,
        np.stack([m.runner_up_confidence for m in maps]) if alt else None,
    )


# ---- precomputed --------------------------------------------------------------------------------
class PrecomputedLabels:
    """``<root>/<folder>/<scene>/<token>/<CAM>.npz`` (keys by variant: semantics [+ confidence],
    noisy_semantics [+ noisy_confidence], hard_semantics [+ hard_confidence] or v1_semantics [+ v1_confidence];
    confidence uint8 0..255 or float 0..1; optional runner-ups: PREFIX_runner_ups (R, H, W) uint8 ids (255 none)
    + PREFIX_runner_up_confidence, the synthetic world's noisy and hard maps have them) or ``<CAM>.png``
    (uint8 ids) with an optional ``<CAM>_confidence.png`` (uint8 0..255)."""

    name = "precomputed"
    model_free = True
    needs_images = False
    KEYS = {
        "exact": ("semantics", "confidence"),
        "noisy": ("noisy_semantics", "noisy_confidence"),
        "hard": ("hard_semantics", "hard_confidence"),
        "v1": ("v1_semantics", "v1_confidence"),
    }
    RUNNER_UP_KEYS = {
        "noisy": ("noisy_runner_ups", "noisy_runner_up_confidence"),
        "hard": ("hard_runner_ups", "hard_runner_up_confidence"),
    }

    def __init__(self, root: str | Path, folder: str = LABELS_2D_DIR, variant: str = "noisy"):
        if variant not in self.KEYS:
            raise ValueError(f"precomputed variant must be one of {', '.join(self.KEYS)}, got {variant!r}")
        self.root, self.folder, self.variant = Path(root), folder, variant
        if not (self.root / folder).is_dir():
            raise DataError(f"supervision.precomputed: folder {self.root / folder} not found")

    def provenance(self) -> dict:
        return {"root": str(self.root), "folder": self.folder, "variant": self.variant}

    def read(self, scene: str, token: str, camera: str, hw: tuple[int, int]) -> LabelMaps:
        """Native-resolution (H, W) uint8 semantics and float32 confidence of one camera, with the runner-ups
        (R, H, W) where the file has them."""
        base = self.root / self.folder / scene / token / camera
        try:
            return self._read(base, token, camera, hw)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            path = base.with_suffix(".npz") if base.with_suffix(".npz").is_file() else base.with_suffix(".png")
            raise DataError(f"sample {token} {camera}: label map {path} cannot be read ({exc})") from None

    def _read(self, base: Path, token: str, camera: str, hw: tuple[int, int]) -> LabelMaps:
        if base.with_suffix(".npz").is_file():
            path = base.with_suffix(".npz")
            sem_key, conf_key = self.KEYS[self.variant]
            with np.load(path) as z:
                if sem_key not in z.files:
                    hint = (
                        f" (older worlds have no {self.variant} maps: run autolabel synth again)"
                        if self.variant in ("hard", "v1")
                        else ""
                    )
                    raise DataError(f"{path}: no '{sem_key}' map (found {z.files}){hint}")
                sem = z[sem_key]
                conf = z[conf_key] if conf_key in z.files else None
                alt_keys = self.RUNNER_UP_KEYS.get(self.variant, ("", ""))
                alt = [z[k] for k in alt_keys] if all(k in z.files for k in alt_keys) else None
        elif base.with_suffix(".png").is_file():
            path = base.with_suffix(".png")
            sem = np.asarray(Image.open(path))
            cpath = base.parent / f"{camera}_confidence.png"
            conf = np.asarray(Image.open(cpath)) if cpath.is_file() else None
            alt = None
        else:
            raise DataError(f"sample {token} {camera}: no label map {base}.npz or {base}.png")
        if sem.dtype != np.uint8 or sem.ndim != 2:
            raise DataError(f"{path}: semantics must be a 2D uint8 map of class ids, got {sem.dtype} {sem.shape}")
        if tuple(sem.shape) != tuple(hw):
            raise DataError(f"{path}: label map is {sem.shape[1]}x{sem.shape[0]}, the camera image is {hw[1]}x{hw[0]}")
        bad = (sem > 16) & (sem != IGNORE_ID)
        if bad.any():
            raise DataError(f"{path}: class ids must be 0..16 or 255, found {sorted(np.unique(sem[bad]).tolist())[:5]}")
        if conf is None:
            conf = (sem != IGNORE_ID).astype(np.float32)
        elif conf.dtype == np.uint8:
            conf = conf.astype(np.float32) / 255
        else:
            conf = conf.astype(np.float32)
            if conf.shape != sem.shape or not np.all((conf >= 0) & (conf <= 1)):
                raise DataError(f"{path}: confidence must be uint8 0..255 or floats in [0, 1] of the map's shape")
        if conf.shape != sem.shape:
            raise DataError(f"{path}: confidence is {conf.shape}, semantics {sem.shape}")
        if alt is None:
            return LabelMaps(sem, conf)
        ids, alt_conf = alt
        if ids.dtype != np.uint8 or alt_conf.dtype != np.uint8 or ids.shape != alt_conf.shape:
            raise DataError(f"{path}: runner-ups must be two uint8 arrays of one shape (R, H, W)")
        if ids.ndim != 3 or ids.shape[1:] != sem.shape:
            raise DataError(f"{path}: runner-ups are {ids.shape}, the map is {sem.shape}: (R, H, W) expected")
        if ((ids > 16) & (ids != IGNORE_ID)).any():
            raise DataError(f"{path}: runner-up class ids must be 0..16 or 255")
        return LabelMaps(sem, conf, ids, alt_conf.astype(np.float32) / 255)

    def label(self, frame: Frame, rc: ResizeCrop) -> LabelMaps:
        return stack_maps(
            [resize_labels(self.read(frame.scene, frame.token, c.name, c.image_size), rc) for c in frame.cameras]
        )


# ---- lidarseg -------------------------------------------------------------------------------------
# nuScenes-lidarseg's 32 categories -> Occ3D ids. The lidarseg challenge's "ignore" group (animals,
# debris, pushable objects, bicycle racks, emergency vehicles, personal mobility, strollers,
# wheelchairs, static.other) is what Occ3D calls "others" (0); noise and the ego vehicle get no label.
LIDARSEG_TO_OCC3D: dict[str, int] = {
    "noise": IGNORE_ID,
    "vehicle.ego": IGNORE_ID,
    "animal": 0,
    "human.pedestrian.personal_mobility": 0,
    "human.pedestrian.stroller": 0,
    "human.pedestrian.wheelchair": 0,
    "movable_object.debris": 0,
    "movable_object.pushable_pullable": 0,
    "static_object.bicycle_rack": 0,
    "vehicle.emergency.ambulance": 0,
    "vehicle.emergency.police": 0,
    "static.other": 0,
    "movable_object.barrier": class_id("barrier"),
    "vehicle.bicycle": class_id("bicycle"),
    "vehicle.bus.bendy": class_id("bus"),
    "vehicle.bus.rigid": class_id("bus"),
    "vehicle.car": class_id("car"),
    "vehicle.construction": class_id("construction_vehicle"),
    "vehicle.motorcycle": class_id("motorcycle"),
    "human.pedestrian.adult": class_id("pedestrian"),
    "human.pedestrian.child": class_id("pedestrian"),
    "human.pedestrian.construction_worker": class_id("pedestrian"),
    "human.pedestrian.police_officer": class_id("pedestrian"),
    "movable_object.trafficcone": class_id("traffic_cone"),
    "vehicle.trailer": class_id("trailer"),
    "vehicle.truck": class_id("truck"),
    "flat.driveable_surface": class_id("driveable_surface"),
    "flat.other": class_id("other_flat"),
    "flat.sidewalk": class_id("sidewalk"),
    "flat.terrain": class_id("terrain"),
    "static.manmade": class_id("manmade"),
    "static.vegetation": class_id("vegetation"),
}


class LidarsegLabels:
    """Sparse labels: each lidar point's lidarseg class at its projected pixel, nearest point per pixel."""

    name = "lidarseg"
    model_free = True
    needs_images = False

    def __init__(self, nusc, min_depth: float = 1.0):
        if not getattr(nusc, "lidarseg", None):
            raise DataError(
                f"{Path(nusc.dataroot) / nusc.version}: no nuScenes-lidarseg labels (lidarseg.json and "
                f"lidarseg/{nusc.version}/); download nuScenes-lidarseg or choose another provider"
            )
        self.nusc, self.min_depth = nusc, min_depth
        table = np.full(256, IGNORE_ID, np.uint8)
        for cat in nusc.category:
            if "index" in cat:
                table[cat["index"]] = LIDARSEG_TO_OCC3D.get(cat["name"], IGNORE_ID)
        self.table = table

    def provenance(self) -> dict:
        return {"mapping": "nuScenes-lidarseg 32 classes -> Occ3D (see autolabel/supervision/providers.py)"}

    def point_labels(self, frame: Frame) -> np.ndarray:
        """(n_key,) Occ3D ids of the keyframe's own lidar points (sweeps have no lidarseg labels)."""
        try:
            rec = self.nusc.get("lidarseg", frame.lidar.token)
        except KeyError:
            raise DataError(f"sample {frame.token}: no lidarseg record for LIDAR_TOP {frame.lidar.token}") from None
        path = Path(self.nusc.dataroot) / rec["filename"]
        if not path.is_file():
            raise DataError(f"sample {frame.token}: lidarseg file {path} not found")
        raw = np.fromfile(path, dtype=np.uint8)
        n_key = int((frame.lidar.time_lag == 0).sum())
        if len(raw) != n_key:
            raise DataError(f"{path}: {len(raw)} labels for {n_key} keyframe lidar points")
        return self.table[raw]

    def label(self, frame: Frame, rc: ResizeCrop) -> LabelMaps:
        labels = self.point_labels(frame)
        key = np.flatnonzero(frame.lidar.time_lag == 0)
        lidar = type(frame.lidar)(
            **{**frame.lidar.__dict__, "points": frame.lidar.points[key], "time_lag": frame.lidar.time_lag[key]}
        )
        small = rc.apply_frame(frame)
        h, w = rc.out_hw
        sems, confs = [], []
        for cam in small.cameras:
            uv, depth, idx = project_points(lidar, cam, self.min_depth)
            sem = np.full(h * w, IGNORE_ID, np.uint8)
            pixel = np.floor(uv[:, 1]).astype(np.int64) * w + np.floor(uv[:, 0]).astype(np.int64)
            order = np.lexsort((depth, pixel))[::-1]  # nearest point last, so it wins the assignment
            sem[pixel[order]] = labels[idx[order]]
            sem = sem.reshape(h, w)
            sems.append(sem)
            confs.append((sem != IGNORE_ID).astype(np.float32))
        return LabelMaps(np.stack(sems), np.stack(confs))


# ---- automatic masks named by a model: sam_clip, sam2_clip, sam_vlm -----------------------------------
def build_masker(
    cfg: SupervisionConfig, use_sam2: bool, device: torch.device, sam_model: torch.nn.Module | None = None
):
    """SAM (segment-anything checkpoint; `sam_model` an already built one) or SAM 2 (transformers folder)."""
    if use_sam2:
        from .sam2 import Sam2Masks, load_sam2

        return Sam2Masks(*load_sam2(cfg.sam2.model, device), cfg.sam, device, cfg.bf16)
    from .sam import SamMasks, build_sam, check_sam_checkpoint

    if sam_model is None:
        check_sam_checkpoint(cfg.sam.checkpoint)
    sam_model = sam_model if sam_model is not None else build_sam(cfg.sam.architecture, cfg.sam.checkpoint)
    return SamMasks(sam_model, cfg.sam, device, cfg.bf16)


class MaskNamingLabels:
    """Automatic masks of every camera (SAM or SAM 2), each named against the vocabulary by CLIP (a crop of
    the full-resolution image per mask) or by Florence-2 (region-to-category likelihoods)."""

    model_free = False
    needs_images = True

    def __init__(
        self,
        cfg: SupervisionConfig,
        device: torch.device,
        classes: tuple[str, ...] | None = None,
        sam_model: torch.nn.Module | None = None,
        provider: str | None = None,
    ):
        """`sam_model`: an already built SAM (benchmarks pass randomly initialised ones); else the checkpoint.
        `provider`: sam_clip, sam2_clip or sam_vlm (default: the recipe's)."""
        from .naming import Vocabulary

        self.name = provider or cfg.provider
        self.cfg, self.device = cfg, device
        self.vocab = Vocabulary.from_mapping(cfg.vocabulary, classes)
        self.use_sam2 = self.name == "sam2_clip" or (self.name == "sam_vlm" and cfg.vlm.masks == "sam2")
        if self.name == "sam_vlm":
            from .florence import FlorenceNamer

            self.scorer = FlorenceNamer(cfg.vlm, self.vocab, device, cfg.bf16)
        else:
            from .clip import ClipScorer

            self.scorer = ClipScorer(cfg.clip, self.vocab, device, cfg.bf16)
        self.sam = build_masker(cfg, self.use_sam2, device, sam_model)

    def provenance(self) -> dict:
        masks = (
            {"sam2_model": self.cfg.sam2.model}
            if self.use_sam2
            else {"sam_checkpoint": self.cfg.sam.checkpoint, "sam_model_type": self.cfg.sam.model_type}
        )
        namer = {"vlm_model": self.cfg.vlm.model} if self.name == "sam_vlm" else {"clip_model": self.cfg.clip.model}
        return {
            **masks,
            **namer,
            "vocabulary": self.cfg.vocabulary,
            "min_confidence": self.cfg.min_confidence,
            "max_masks": self.cfg.sam.max_masks,
            "crops": "full-resolution",
        }

    def masks(self, emb, image: np.ndarray, rc: ResizeCrop):
        return self.sam.automatic(emb, image.shape[:2], rc)

    def name_masks(self, masks, full: torch.Tensor, rc: ResizeCrop):
        """(labels (K,), confidence (K,), runner-ups (ids (K, R), confidence (K, R))) of a camera's masks; `full`
        its (3, H, W) float image."""
        from .naming import class_probabilities, name_masks, runner_up_names

        probs = class_probabilities(self.scorer.prompt_logits(full, masks.masks, masks.boxes, rc), self.vocab)
        labels, conf = name_masks(probs, masks.quality, self.vocab)
        return labels, conf, runner_up_names(probs, masks.quality, self.vocab, PROVIDER_RUNNER_UPS)

    def label_image(self, emb, image: np.ndarray, full: torch.Tensor, rc: ResizeCrop):
        """Named automatic masks of one camera painted into (h, w) semantics / confidence tensors and their
        (R, h, w) runner-ups (naming.paint)."""
        from .naming import paint

        masks = self.masks(emb, image, rc)
        labels, conf, runner_ups = self.name_masks(masks, full, rc)
        return paint(masks.masks, labels, conf, self.cfg.min_confidence, runner_ups=runner_ups)

    def full_image(self, image: np.ndarray) -> torch.Tensor:
        """(3, H, W) float [0, 1] camera image at full resolution on the device (naming crops are cut from it)."""
        return torch.from_numpy(np.require(image, requirements="W")).to(self.device).permute(2, 0, 1).float() / 255

    @torch.no_grad()
    def label(self, frame: Frame, rc: ResizeCrop) -> LabelMaps:
        _check_images(frame)
        images = np.stack([c.image for c in frame.cameras])
        emb = self.sam.embed(images)
        out = [self.label_image(emb[i : i + 1], images[i], self.full_image(images[i]), rc) for i in range(len(images))]
        return _stack(out, rc)


SamClipLabels = MaskNamingLabels  # the name before issue 22


# ---- SAM 3: text-prompted masks ----------------------------------------------------------------------
class Sam3Labels:
    """SAM 3 prompted with every phrase of the vocabulary; masks, classes and scores from the model."""

    name = "sam3"
    model_free = False
    needs_images = True

    def __init__(self, cfg: SupervisionConfig, device: torch.device):
        from .naming import Vocabulary
        from .sam3 import Sam3Segmenter

        self.cfg = cfg
        self.segmenter = Sam3Segmenter(cfg.sam3, Vocabulary.from_mapping(cfg.vocabulary), device, cfg.bf16)

    def provenance(self) -> dict:
        c = self.cfg.sam3
        return {
            "sam3_model": c.model,
            "vocabulary": self.cfg.vocabulary,
            "score_threshold": c.score_threshold,
            "mask_threshold": c.mask_threshold,
            "max_masks": c.max_masks,
            "min_confidence": self.cfg.min_confidence,
        }

    @torch.no_grad()
    def label(self, frame: Frame, rc: ResizeCrop) -> LabelMaps:
        from .naming import paint

        _check_images(frame)
        images = np.stack([c.image for c in frame.cameras])
        vision = self.segmenter.embed(images)
        out = []
        for i in range(len(images)):
            masks, labels, scores = self.segmenter.segment(vision, i, images.shape[1:3], rc)
            if len(masks):
                out.append(paint(masks, labels, scores, self.cfg.min_confidence))
            else:
                out.append((torch.full(rc.out_hw, IGNORE_ID, dtype=torch.uint8), torch.zeros(rc.out_hw), None, None))
        return _stack(out, rc)


class GroundedSamLabels:
    """Detector boxes -> SAM box-prompted masks for object classes, painted over SAM + CLIP stuff labels."""

    name = "grounded_sam"
    model_free = False
    needs_images = True

    def __init__(self, cfg: SupervisionConfig, device: torch.device):
        from .detector import build_detector
        from .naming import Vocabulary

        detected = set(cfg.detector.classes)
        missing = [c for c in detected if c not in cfg.vocabulary]
        if missing:
            raise DataError(f"supervision.detector.classes {missing} have no prompts in supervision.vocabulary")
        stuff = tuple(c for c in LABEL_CLASSES if c not in detected)
        self.stuff = MaskNamingLabels(cfg, device, classes=stuff, provider="sam_clip")
        obj_vocab = {k: v for k, v in cfg.vocabulary.items() if k in detected and k != IGNORE_KEY}
        self.detector = build_detector(cfg.detector, Vocabulary.from_mapping(obj_vocab), device, cfg.bf16)
        self.cfg, self.device = cfg, device

    def provenance(self) -> dict:
        return {
            **self.stuff.provenance(),
            "detector_model": self.cfg.detector.model,
            "detector_classes": list(self.cfg.detector.classes),
        }

    @torch.no_grad()
    def label(self, frame: Frame, rc: ResizeCrop) -> LabelMaps:
        from .naming import paint

        _check_images(frame)
        images = np.stack([c.image for c in frame.cameras])
        emb = self.stuff.sam.embed(images)
        detections = self.detector.detect(images)
        out = []
        for i, det in enumerate(detections):
            base = self.stuff.label_image(emb[i : i + 1], images[i], self.stuff.full_image(images[i]), rc)
            masks = self.stuff.sam.from_boxes(emb[i : i + 1], images.shape[1:3], rc, det.boxes)
            score = det.scores * masks.iou.clamp(0, 1).sqrt()
            out.append(
                paint(masks.masks, det.labels, score, self.cfg.min_confidence, base=base) if len(masks.masks) else base
            )
        return _stack(out, rc)


def _stack(out: list[tuple], rc: ResizeCrop) -> LabelMaps:
    """The cameras' painted maps (naming.paint: semantics, confidence, runner-ups or None) as LabelMaps (runner-ups
    only where every camera has them)."""
    sem = torch.stack([o[0].cpu() for o in out]).numpy()
    conf = torch.stack([o[1].cpu() for o in out]).float().numpy()
    pad = resize_labels(LabelMaps(np.zeros(rc.in_hw, np.uint8), np.ones(rc.in_hw, np.float32)), rc)[0] == IGNORE_ID
    sem[:, pad] = IGNORE_ID  # the crop's padding has no image behind it
    conf[:, pad] = 0
    if any(o[2] is None for o in out):
        return LabelMaps(sem, conf)
    alt = torch.stack([o[2].cpu() for o in out]).numpy()
    alt_conf = torch.stack([o[3].cpu() for o in out]).float().numpy()
    alt[:, :, pad] = IGNORE_ID
    alt_conf[:, :, pad] = 0
    return LabelMaps(sem, conf, alt, alt_conf)


MODEL_PROVIDERS = ("sam_clip", "sam2_clip", "sam3", "sam_vlm", "grounded_sam")


def model_checks(cfg: SupervisionConfig) -> list:
    """The provider's local model paths as (check, ...) callables, each raising a DataError that says what to
    download; a transformers folder must also hold the expected architecture (config.json's model_type)."""
    from .clip import check_model_folder
    from .sam import check_sam_checkpoint

    def folder(path, field, what, types):
        def check():
            from .detector import model_type

            p = check_model_folder(path, field, what)
            if types and model_type(p) not in types:
                raise DataError(
                    f"{field}: {p} holds a {model_type(p)!r} model, not a {what}; download one into a folder "
                    f"and point the recipe there"
                )

        return check

    clip = folder(cfg.clip.model, "supervision.clip.model", "CLIP model (e.g. openai/clip-vit-base-patch16)", ())
    sam = lambda: check_sam_checkpoint(cfg.sam.checkpoint)  # noqa: E731
    sam2 = folder(cfg.sam2.model, "supervision.sam2.model", "SAM 2 model (e.g. facebook/sam2.1-hiera-large)", ("sam2",))
    p = cfg.provider
    if p == "sam_clip":
        return [sam, clip]
    if p == "sam2_clip":
        return [sam2, clip]
    if p == "sam3":
        return [folder(cfg.sam3.model, "supervision.sam3.model", "SAM 3 model (e.g. facebook/sam3)", ("sam3",))]
    if p == "sam_vlm":
        vlm = folder(
            cfg.vlm.model,
            "supervision.vlm.model",
            "Florence-2 model (e.g. florence-community/Florence-2-large)",
            ("florence2",),
        )
        return [sam2 if cfg.vlm.masks == "sam2" else sam, vlm]
    if p == "grounded_sam":
        from .detector import DETECTOR_TYPES

        return [
            sam,
            clip,
            folder(
                cfg.detector.model,
                "supervision.detector.model",
                "OWL-ViT / OWLv2 / Grounding DINO detector (e.g. IDEA-Research/grounding-dino-base)",
                DETECTOR_TYPES,
            ),
        ]
    return []


def check_models(cfg: SupervisionConfig) -> None:
    """Every local model path the provider needs, checked together before anything is loaded (or any run
    folder written): one DataError listing all that are missing, each with what to download."""
    if cfg.provider not in MODEL_PROVIDERS:
        return
    checks = model_checks(cfg)
    problems = []
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"supervision.device is {cfg.device!r} but no CUDA GPU is available (use auto or cpu)")
    for check in checks:
        try:
            check()
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        raise DataError("; ".join(problems))


def build_provider(cfg: SupervisionConfig, dataroot: str | Path, nusc=None) -> LabelProvider:
    """The provider the recipe names; model paths are checked here, before any frame is processed."""
    check_models(cfg)
    if cfg.provider == "precomputed":
        return PrecomputedLabels(cfg.precomputed.root or dataroot, cfg.precomputed.folder, cfg.precomputed.variant)
    if cfg.provider == "lidarseg":
        return LidarsegLabels(nusc, cfg.lidar_min_depth)
    device = resolve_device(cfg.device)
    if cfg.provider in ("sam_clip", "sam2_clip", "sam_vlm"):
        return MaskNamingLabels(cfg, device)
    if cfg.provider == "sam3":
        return Sam3Labels(cfg, device)
    return GroundedSamLabels(cfg, device)
