"""Typed configuration of the 2D supervision providers (the recipe's ``supervision`` section)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from occnet.classes import FREE_ID, OCC3D_CLASS_NAMES

PROVIDERS = ("precomputed", "sam_clip", "sam2_clip", "sam3", "sam_vlm", "grounded_sam", "lidarseg")
VLM_MASKS = ("sam", "sam2")  # which automatic masks sam_vlm names
IGNORE_KEY = "ignore"  # vocabulary entry whose prompts name things that get no label (255): sky, ego car
SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
PRECOMPUTED_VARIANTS = ("exact", "noisy", "hard", "v1")

# Prompts per Occ3D class for driving scenes. Several prompts per class: CLIP scores a class by its best
# matching prompt (log-sum-exp), so synonyms widen what is recognised without splitting probability mass.
DEFAULT_VOCABULARY: dict[str, list[str]] = {
    "others": ["trash can", "animal", "shopping cart"],
    "barrier": ["barrier", "concrete barrier", "road barrier", "guard rail"],
    "bicycle": ["bicycle", "bike"],
    "bus": ["bus", "city bus"],
    "car": ["car", "sedan", "SUV", "van"],
    "construction_vehicle": ["excavator", "crane", "bulldozer", "construction vehicle"],
    "motorcycle": ["motorcycle", "scooter", "motorbike"],
    "pedestrian": ["pedestrian", "person", "people walking"],
    "traffic_cone": ["traffic cone"],
    "trailer": ["trailer", "semi trailer"],
    "truck": ["truck", "pickup truck", "lorry"],
    "driveable_surface": ["road", "asphalt", "street", "crosswalk"],
    "other_flat": ["median strip", "traffic island", "rail track"],
    "sidewalk": ["sidewalk", "pavement", "footpath"],
    "terrain": ["grass", "soil", "lawn", "sand"],
    "manmade": ["building", "wall", "fence", "pole", "traffic sign", "traffic light"],
    "vegetation": ["tree", "bush", "hedge", "vegetation"],
    IGNORE_KEY: ["sky"],
}
LABEL_CLASSES = tuple(OCC3D_CLASS_NAMES[:FREE_ID])  # 2D labels name the 17 non-free classes


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def check_vocabulary(vocab: dict[str, list[str]]) -> None:
    allowed = (*LABEL_CLASSES, IGNORE_KEY)
    for name, prompts in vocab.items():
        _check(name in allowed, f"vocabulary names an unknown class {name!r}; allowed: {', '.join(allowed)}")
        _check(
            len(prompts) > 0 and all(isinstance(p, str) and p.strip() for p in prompts),
            f"vocabulary.{name} must be a non-empty list of prompts",
        )
    _check(any(k != IGNORE_KEY for k in vocab), "vocabulary must name at least one class")


@dataclass
class SamArch:
    """SAM's architecture; presets vit_b / vit_l / vit_h are segment-anything's published ones."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    prompt_embed_dim: int = 256
    window_size: int = 14
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8

    def __post_init__(self) -> None:
        _check(self.image_size % self.patch_size == 0, "sam.arch.image_size must be a multiple of patch_size")
        _check(
            all(0 <= i < self.encoder_depth for i in self.encoder_global_attn_indexes),
            "sam.arch.encoder_global_attn_indexes must lie in 0..encoder_depth-1",
        )


SAM_PRESETS = {
    "vit_b": SamArch(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamArch(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamArch(1280, 32, 16, (7, 15, 23, 31)),
}


@dataclass
class SamConfig:
    """segment-anything's automatic mask generation, batched on the GPU."""

    checkpoint: Optional[str] = None  # local .pth (e.g. sam_vit_h_4b8939.pth)
    model_type: str = "vit_h"
    arch: Optional[SamArch] = None  # an explicit architecture instead of the model_type preset
    points_per_side: int = 32  # the point grid prompts (points_per_side ** 2 per image)
    points_per_batch: int = 256
    pred_iou_thresh: float = 0.86
    stability_score_thresh: float = 0.92
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_mask_area: int = 64  # pixels at the label resolution
    max_masks: Optional[int] = None  # keep at most this many masks per image (highest quality first); None: all

    def __post_init__(self) -> None:
        _check(
            self.model_type in SAM_MODEL_TYPES,
            f"sam.model_type must be one of {SAM_MODEL_TYPES}, got {self.model_type!r}",
        )
        _check(
            self.points_per_side >= 1 and self.points_per_batch >= 1,
            "sam.points_per_side and points_per_batch must be >= 1",
        )
        _check(self.min_mask_area >= 0, "sam.min_mask_area must be >= 0")
        _check(self.max_masks is None or self.max_masks >= 1, "sam.max_masks must be >= 1 (or null for all)")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            _check(0 <= getattr(self, name) <= 1, f"sam.{name} must lie in [0, 1]")

    @property
    def architecture(self) -> SamArch:
        return self.arch or SAM_PRESETS[self.model_type]


@dataclass
class ClipConfig:
    """A CLIP-family model (transformers, local folder) that names masks."""

    model: Optional[str] = None  # local folder with config.json, weights, tokenizer and preprocessor files
    templates: tuple[str, ...] = ("a photo of a {}.", "a photo of a {} in a street scene.")
    batch_size: int = 128  # mask crops per forward pass
    crop_margin: float = 0.1  # context around each mask's box, as a fraction of the box size

    def __post_init__(self) -> None:
        _check(
            len(self.templates) > 0 and all("{}" in t for t in self.templates),
            "clip.templates must be a non-empty list of strings holding '{}' where the prompt goes",
        )
        _check(self.batch_size >= 1, "clip.batch_size must be >= 1")
        _check(0 <= self.crop_margin <= 1, "clip.crop_margin must lie in [0, 1]")


@dataclass
class DetectorConfig:
    """A text-prompted open-vocabulary detector (OWL-ViT, OWLv2 or Grounding DINO in transformers, local folder;
    the folder's config.json says which)."""

    model: Optional[str] = None
    box_threshold: float = 0.15
    nms_threshold: float = 0.5
    max_boxes: int = 100  # per image
    classes: tuple[str, ...] = (
        "barrier",
        "bicycle",
        "bus",
        "car",
        "construction_vehicle",
        "motorcycle",
        "pedestrian",
        "traffic_cone",
        "trailer",
        "truck",
    )  # detected; all others come from mask naming

    def __post_init__(self) -> None:
        _check(
            0 <= self.box_threshold <= 1 and 0 <= self.nms_threshold <= 1,
            "detector.box_threshold and nms_threshold must lie in [0, 1]",
        )
        bad = [c for c in self.classes if c not in LABEL_CLASSES]
        _check(not bad, f"detector.classes names unknown class(es) {bad}; allowed: {', '.join(LABEL_CLASSES)}")
        _check(self.max_boxes >= 1, "detector.max_boxes must be >= 1")


def _check_model(model: Optional[str], field: str) -> None:
    _check(
        model is None or (isinstance(model, str) and model.strip() != ""),
        f"{field} must be the path of a local model folder (or null)",
    )


@dataclass
class Sam2Config:
    """SAM 2 (transformers Sam2Model, local folder, e.g. facebook/sam2.1-hiera-large). Its automatic masks use
    the point grid, thresholds and max_masks of the ``sam`` section."""

    model: Optional[str] = None

    def __post_init__(self) -> None:
        _check_model(self.model, "sam2.model")


@dataclass
class Sam3Config:
    """SAM 3 (transformers Sam3Model, local folder, e.g. facebook/sam3) prompted with the vocabulary's phrases."""

    model: Optional[str] = None
    score_threshold: float = (
        0.3  # instance score = sigmoid(query logit) x sigmoid(presence logit); the processor's default
    )
    mask_threshold: float = 0.5  # on the mask probability
    prompts_per_batch: int = 8  # phrases decoded together against one image's features
    max_masks: Optional[int] = None  # per image, highest scores first; None: all above score_threshold

    def __post_init__(self) -> None:
        _check_model(self.model, "sam3.model")
        _check(0 <= self.score_threshold <= 1, "sam3.score_threshold must lie in [0, 1]")
        _check(0 < self.mask_threshold < 1, "sam3.mask_threshold must lie in (0, 1)")
        _check(self.prompts_per_batch >= 1, "sam3.prompts_per_batch must be >= 1")
        _check(self.max_masks is None or self.max_masks >= 1, "sam3.max_masks must be >= 1 (or null for all)")


@dataclass
class VlmConfig:
    """A vision-language model that names masks (Florence-2 in transformers, local folder)."""

    model: Optional[str] = None  # e.g. microsoft/Florence-2-large in transformers format (florence-community)
    masks: str = "sam"  # the automatic masks it names: sam (the sam section) or sam2 (the sam2 section)
    batch_size: int = 256  # (mask, phrase) pairs scored per decoder pass

    def __post_init__(self) -> None:
        _check_model(self.model, "vlm.model")
        _check(self.masks in VLM_MASKS, f"vlm.masks must be one of {', '.join(VLM_MASKS)}, got {self.masks!r}")
        _check(self.batch_size >= 1, "vlm.batch_size must be >= 1")


@dataclass
class PrecomputedConfig:
    """Label maps made elsewhere: ``<root>/<folder>/<scene>/<token>/<CAM>.npz|.png``."""

    root: Optional[str] = None  # None: the dataset root
    folder: str = "labels2d"
    # which maps of an NPZ: exact = semantics/confidence, noisy = noisy_semantics/noisy_confidence (the
    # synthetic world's default noise level), hard = hard_semantics/hard_confidence (1.6x that level),
    # v1 = v1_semantics/v1_confidence (the first release's noise model at the default level, for comparison)
    variant: str = "noisy"

    def __post_init__(self) -> None:
        _check(
            self.variant in PRECOMPUTED_VARIANTS,
            f"precomputed.variant must be one of {', '.join(PRECOMPUTED_VARIANTS)}, got {self.variant!r}",
        )


MAX_RUNNER_UPS = 4  # runner-up names a cache may keep per pixel
DEFAULT_RUNNER_UPS = 2


@dataclass
class SupervisionConfig:
    provider: str = "precomputed"
    cache: Optional[str] = None  # Zarr store; None: <run folder>/supervision.zarr
    vocabulary: dict[str, list[str]] = field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_VOCABULARY.items()}
    )
    min_confidence: float = 0.2  # pixels named with less confidence stay 255
    lidar_min_depth: float = 1.0
    lidar_max_depth: Optional[float] = None
    # runner-up names kept per pixel in the cache (the naming classifier's next classes and their confidences,
    # where the provider's maps carry them); fusion sums them over views (fusion.runner_up_weight). 0: none
    runner_ups: int = DEFAULT_RUNNER_UPS
    device: str = "auto"  # auto = cuda when available
    bf16: bool = True  # SAM / CLIP / detector in bfloat16 on CUDA
    precomputed: PrecomputedConfig = field(default_factory=PrecomputedConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    sam2: Sam2Config = field(default_factory=Sam2Config)
    sam3: Sam3Config = field(default_factory=Sam3Config)
    vlm: VlmConfig = field(default_factory=VlmConfig)

    def __post_init__(self) -> None:
        _check(self.provider in PROVIDERS, f"provider must be one of {PROVIDERS}, got {self.provider!r}")
        check_vocabulary(self.vocabulary)
        _check(0 <= self.min_confidence <= 1, "min_confidence must lie in [0, 1]")
        _check(self.lidar_min_depth >= 0, "lidar_min_depth must be >= 0")
        _check(0 <= self.runner_ups <= MAX_RUNNER_UPS, f"runner_ups must lie in 0..{MAX_RUNNER_UPS}")
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
        )
