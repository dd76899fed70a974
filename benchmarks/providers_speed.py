"""Speed of every 2D-label provider at nuScenes size, with a forced number of kept masks per image.

Random weights of the real (full-size) architectures, built from their configurations and saved once to
`--models-dir` as the local folders / checkpoints users download (nothing is downloaded; speed does not
depend on the weights): SAM ViT-H, SAM 2.1 Hiera-L, SAM 3, CLIP ViT-B/16, Florence-2 large, OWLv2 base,
Grounding DINO (Swin-B). Every provider runs through its own `label(frame, rc)` on six 1600x900 cameras;
its mask generator, namer and painter are timed separately by wrapping them (CUDA-synchronised), so the
phases add up to the provider's own call ("other" is the rest: image upload, stacking, the crop pad).

Forced mask count: thresholds at 0, box NMS off (IoU 1.0) and `max_masks` = K, so every image keeps
exactly K masks (SAM / SAM 2: the K of highest quality out of 32x32x3 candidates; SAM 3: the K
highest-scoring instances over all phrases). grounded_sam adds up to `max_boxes` (100) detected objects.

Baselines in the same run (SAM only, no naming): segment-anything's SamAutomaticMaskGenerator (ViT-H, one
image at a time, its default thresholds -- at thresholds 0 its per-mask RLE on the CPU takes minutes per
image) and the transformers ``mask-generation`` pipeline (SAM 2.1 Hiera-L, its default thresholds).
Their mask counts are what those thresholds keep of random-weight masks, so compare seconds, not counts.

Extrapolation: seconds per frame x 34,149 keyframes (nuScenes trainval), on 1 GPU and on 8 (frames are
sharded by rank with no communication, so 8 GPUs take 1/8 of the time, assumed, not measured here).

    python benchmarks/providers_speed.py [--providers all] [--masks 50,200] [--frames 3] [--bf16] [--compile]
    python benchmarks/providers_speed.py --smoke      # tiny models, small images, on the CPU (CI)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from autolabel.data.transforms import ResizeCrop  # noqa: E402
from autolabel.supervision.config import (
    SAM_PRESETS,
    ClipConfig,
    DetectorConfig,
    Sam2Config,
    Sam3Config,  # noqa: E402
    SamConfig,
    SupervisionConfig,
    VlmConfig,
)

PROVIDERS = ("sam_clip", "sam2_clip", "sam3", "sam_vlm", "grounded_sam-owl", "grounded_sam-gdino")
KEYFRAMES = 34149  # nuScenes trainval keyframes
CAMS = 6


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Phases:
    """Seconds per phase, summed over wrapped calls (synchronised before and after each)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.masks: list[int] = []  # kept masks per image (automatic masks, or SAM 3 instances)
        self.active = True

    def count(self, fn):
        def counted(*a, **k):
            out = fn(*a, **k)
            self.masks.append(len(out.masks) if hasattr(out, "masks") else len(out[0]))
            return out

        return counted

    def wrap(self, phase: str, fn):
        def timed(*a, **k):
            if not self.active:
                return fn(*a, **k)
            self.active = False  # a phase inside another counts for the outer one
            sync()
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sync()
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0
                self.active = True

        return timed


def images(n: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(n, 6, H, W, 3) uint8 camera images with structure (smooth blobs), not noise."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.integers(0, 255, (n * CAMS, 3, 9, 16)).astype(np.float32))
    big = torch.nn.functional.interpolate(small, hw, mode="bicubic").clamp(0, 255)
    return big.permute(0, 2, 3, 1).reshape(n, CAMS, *hw, 3).to(torch.uint8).numpy()


def frame_of(imgs: np.ndarray):
    from autolabel.data.frame import Camera, Frame, Lidar

    h, w = imgs.shape[1:3]
    eye = np.eye(4)
    K = np.array([[1266.0 * w / 1600, 0, w / 2], [0, 1266.0 * w / 1600, h / 2], [0, 0, 1]])
    cams = tuple(Camera(f"CAM{i}", imgs[i], K, eye, eye, 0, f"t{i}", (h, w)) for i in range(CAMS))
    return Frame("t", "s", 0, cams, Lidar(np.zeros((0, 5), np.float32), np.zeros(0, np.float32), eye, eye, 0, ""), None)


# ---- random models of the real architectures, saved as users' local folders -------------------------
def save_models(folder: Path, smoke: bool) -> dict:
    """Paths of every model, created once in `folder` (a second run reuses them)."""
    import tiny_models as tm

    folder.mkdir(parents=True, exist_ok=True)
    tiny = smoke
    makers = {
        "sam": lambda p: _save_sam(p, tiny),
        "clip": lambda p: _save_clip(p, tiny),
        "sam2": lambda p: tm.save_sam2(p, tiny),
        "sam3": lambda p: tm.save_sam3(p, tiny),
        "florence2": lambda p: tm.save_florence2(p, tiny),
        "gdino": lambda p: tm.save_grounding_dino(p, tiny),
        "owl": lambda p: _save_owl(p, tiny),
    }
    out = {}
    for name, make in makers.items():
        path = folder / (name + (".pth" if name == "sam" else ""))
        if not path.exists() or (path.is_dir() and not (path / "config.json").is_file()):
            t0 = time.perf_counter()
            make(path)
            print(f"saved random {name} to {path} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        out[name] = str(path)
    return out


def _save_sam(path: Path, tiny: bool) -> None:
    import tiny_models as tm

    if tiny:
        tm.save_tiny_sam(path)
    else:
        from autolabel.supervision.sam import build_sam

        torch.save(build_sam(SAM_PRESETS["vit_h"], None).state_dict(), path)


def _save_clip(path: Path, tiny: bool) -> None:
    import tiny_models as tm

    if tiny:
        tm.save_tiny_clip(path)
    else:  # ViT-B/16
        tm.save_clip(
            path,
            text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
            vision=dict(
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                image_size=224,
                patch_size=16,
            ),
            projection_dim=512,
        )


def _save_owl(path: Path, tiny: bool) -> None:
    import tiny_models as tm

    if tiny:
        tm.save_tiny_owlv2(path)
        return
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor

    path.mkdir(parents=True, exist_ok=True)
    n_vocab = tm._save_tokenizer(path)
    cfg = Owlv2Config(
        text_config=dict(
            vocab_size=max(n_vocab, 49408), eos_token_id=n_vocab - 1, bos_token_id=n_vocab - 2, pad_token_id=n_vocab - 1
        )
    )  # OWLv2 base-patch16 (960x960)
    Owlv2ForObjectDetection(cfg).save_pretrained(path)
    Owlv2ImageProcessor().save_pretrained(path)


# ---- one provider -----------------------------------------------------------------------------------
def provider_config(case: str, models: dict, k: int, bf16: bool, device: str, smoke: bool) -> SupervisionConfig:
    provider = case.split("-")[0]
    sam = SamConfig(
        checkpoint=models["sam"],
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        min_mask_area=0,
        max_masks=k,
        points_per_side=4 if smoke else 32,
    )
    if smoke:
        from tiny_models import TINY_SAM

        sam.arch = TINY_SAM
    det = DetectorConfig(model=models["gdino" if case.endswith("gdino") else "owl"], box_threshold=0.0)
    return SupervisionConfig(
        provider=provider,
        device=device,
        bf16=bf16,
        min_confidence=0.0,
        sam=sam,
        clip=ClipConfig(model=models["clip"]),
        sam2=Sam2Config(model=models["sam2"]),
        sam3=Sam3Config(model=models["sam3"], score_threshold=0.0, max_masks=k),
        vlm=VlmConfig(model=models["florence2"]),
        detector=det,
    )


def instrument(p, phases: Phases) -> None:
    """Wrap the provider's mask generator, namer and painter with phase timers."""
    from autolabel.supervision import naming

    def wrap(obj, attr, phase):
        if obj is not None and hasattr(obj, attr):
            setattr(obj, attr, phases.wrap(phase, getattr(obj, attr)))

    stuff = getattr(p, "stuff", p)  # grounded_sam: SAM + CLIP stuff labels inside
    for obj in {id(stuff): stuff, id(p): p}.values():
        masker = getattr(obj, "sam", None)
        if masker is not None:
            masker.automatic = phases.count(masker.automatic)
        for attr in ("embed", "automatic", "from_boxes"):
            wrap(masker, attr, "masks")
        wrap(getattr(obj, "scorer", None), "prompt_logits", "naming")
    wrap(getattr(p, "detector", None), "detect", "naming")
    seg = getattr(p, "segmenter", None)  # sam3: masks, classes and scores in one model
    wrap(seg, "embed", "masks")
    if seg is not None:
        seg.segment = phases.count(seg.segment)
    wrap(seg, "segment", "masks")
    if not getattr(naming.paint, "_timed", False):
        naming.paint = phases.wrap("paint", naming.paint)
        naming.paint._timed = True


def compile_models(p) -> None:
    """torch.compile the heavy encoders (the first, warm-up frame pays for compilation)."""
    stuff = getattr(p, "stuff", p)
    masker = getattr(stuff, "sam", None)
    if masker is not None:
        m = masker.sam
        for attr in ("image_encoder", "vision_encoder"):  # SAM / SAM 2
            if hasattr(m, attr):
                setattr(m, attr, torch.compile(getattr(m, attr)))
    scorer = getattr(stuff, "scorer", None)
    if scorer is not None and hasattr(scorer.model, "vision_model"):  # CLIP
        scorer.model.vision_model = torch.compile(scorer.model.vision_model)
    if (
        scorer is not None and hasattr(scorer.model, "model") and hasattr(scorer.model.model, "vision_tower")
    ):  # Florence-2
        scorer.model.model.vision_tower = torch.compile(scorer.model.model.vision_tower)
    seg = getattr(p, "segmenter", None)
    if seg is not None:
        seg.model.vision_encoder = torch.compile(seg.model.vision_encoder)


def time_provider(case: str, models: dict, k: int, frames: np.ndarray, label_hw, args) -> dict:
    from autolabel.supervision import naming
    from autolabel.supervision.providers import build_provider

    device = "cpu" if args.smoke else args.device
    real_paint = naming.paint
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    p = build_provider(provider_config(case, models, k, args.bf16, device, args.smoke), ".")
    if args.compile:
        compile_models(p)
    phases = Phases()
    instrument(p, phases)
    rc = ResizeCrop.fit(frames.shape[2:4], label_hw)
    totals, kept = [], []
    try:
        for j, imgs in enumerate(frames):
            phases.seconds.clear()
            phases.masks.clear()
            sync()
            t0 = time.perf_counter()
            sem = p.label(frame_of(imgs), rc).semantics
            sync()
            if j > 0 or len(frames) == 1:  # the first frame pays for warm-up (cuDNN, allocator, compilation)
                totals.append((time.perf_counter() - t0, dict(phases.seconds)))
            kept.append(float((sem != 255).mean()))
    finally:
        naming.paint = real_paint
    frame_s = float(np.mean([t for t, _ in totals]))
    per = {ph: float(np.mean([s.get(ph, 0.0) for _, s in totals])) / CAMS for ph in ("masks", "naming", "paint")}
    per["other"] = frame_s / CAMS - sum(per.values())
    if case == "sam3":
        per["naming"] = float("nan")  # SAM 3's masks come with their phrase: naming is inside "masks"
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() and device != "cpu" else float("nan")
    del p
    return {
        "name": f"{case} (forced {k})",
        "k": int(round(np.mean(phases.masks))) if phases.masks else 0,
        "frame_s": frame_s,
        "per": per,
        "peak_gib": peak,
        "labelled": float(np.mean(kept)),
    }


# ---- baselines (SAM only) ---------------------------------------------------------------------------
def time_amg(models: dict, frames: np.ndarray, n_images: int, args) -> dict:
    from segment_anything import SamAutomaticMaskGenerator

    from autolabel.supervision.sam import build_sam

    device = "cpu" if args.smoke else args.device
    if args.smoke:
        from tiny_models import TINY_SAM

        sam = build_sam(TINY_SAM, models["sam"])
        gen = SamAutomaticMaskGenerator(sam.to(device), points_per_side=4)
    else:
        sam = build_sam(SAM_PRESETS["vit_h"], models["sam"])
        gen = SamAutomaticMaskGenerator(sam.to(device))
    imgs = frames.reshape(-1, *frames.shape[2:])
    gen.generate(imgs[0])  # warm-up
    sync()
    t0 = time.perf_counter()
    n = [len(gen.generate(imgs[1 + i])) for i in range(n_images)]
    sync()
    s = (time.perf_counter() - t0) / n_images
    return {
        "name": "SamAutomaticMaskGenerator (SAM only)",
        "k": int(np.mean(n)),
        "frame_s": CAMS * s,
        "per": {"masks": s, "naming": float("nan"), "paint": float("nan"), "other": float("nan")},
        "peak_gib": float("nan"),
        "labelled": float("nan"),
    }


def time_pipeline(models: dict, frames: np.ndarray, n_images: int, args) -> dict:
    from PIL import Image
    from transformers import AutoImageProcessor, Sam2Model, pipeline

    device = "cpu" if args.smoke else args.device
    model = Sam2Model.from_pretrained(models["sam2"])
    proc = AutoImageProcessor.from_pretrained(models["sam2"])
    gen = pipeline("mask-generation", model=model, image_processor=proc, device=torch.device(device))
    kw = {"points_per_batch": 64 if not args.smoke else 16}
    if args.smoke:
        kw["points_per_crop"] = 4
    imgs = frames.reshape(-1, *frames.shape[2:])
    gen(Image.fromarray(imgs[0]), **kw)  # warm-up
    sync()
    t0 = time.perf_counter()
    n = [len(gen(Image.fromarray(imgs[1 + i]), **kw)["masks"]) for i in range(n_images)]
    sync()
    s = (time.perf_counter() - t0) / n_images
    return {
        "name": "transformers mask-generation, SAM 2 (SAM only)",
        "k": int(np.mean(n)),
        "frame_s": CAMS * s,
        "per": {"masks": s, "naming": float("nan"), "paint": float("nan"), "other": float("nan")},
        "peak_gib": float("nan"),
        "labelled": float("nan"),
    }


# ---- the table --------------------------------------------------------------------------------------
def table(rows: list[dict], header: str) -> str:
    def f(v, fmt):
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)

    lines = [
        header,
        "masks/img: kept automatic masks (SAM 3: instances) per image, measured; grounded_sam adds its "
        "detections. sam3: naming is part of masks. other: upload, stacking, crop padding.",
        f"| {'provider':<48} | {'masks/img':>9} | {'masks s/img':>11} | {'naming s/img':>12} | {'paint s/img':>11} | "
        f"{'other s/img':>11} | {'s/img':>7} | {'s/frame':>8} | {'peak GiB':>8} | {'34,149 frames, 1 GPU':>20} | "
        f"{'8 GPUs':>8} |",
        "|" + "|".join("-" * (w + 2) for w in (48, 9, 11, 12, 11, 11, 7, 8, 8, 20, 8)) + "|",
    ]
    for r in rows:
        hours = r["frame_s"] * KEYFRAMES / 3600
        p = r["per"]
        lines.append(
            f"| {r['name']:<48} | {r['k']:>9} | {f(p['masks'], '.3f'):>11} | {f(p['naming'], '.3f'):>12} | "
            f"{f(p['paint'], '.4f'):>11} | {f(p['other'], '.3f'):>11} | {r['frame_s'] / CAMS:>7.3f} | "
            f"{r['frame_s']:>8.2f} | {f(r['peak_gib'], '.1f'):>8} | {hours:>18.1f} h | {hours / 8:>6.1f} h |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--providers", default="all", help=f"comma-separated among {', '.join(PROVIDERS)} (default all)")
    ap.add_argument("--masks", default="50,200", help="forced kept masks per image, comma-separated")
    ap.add_argument("--frames", type=int, default=3, help="frames per provider (the first is a warm-up)")
    ap.add_argument("--baseline-images", type=int, default=2, help="images per baseline (0: no baselines)")
    ap.add_argument("--label-size", default="256x704", help="label (network input) size HxW")
    ap.add_argument("--bf16", action="store_true", help="models in bfloat16 autocast (CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the image encoders")
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--models-dir", default=None, help="where the random models are saved / reused (default: a temp dir)"
    )
    ap.add_argument(
        "--smoke", action="store_true", help="tiny models, 90x160 images, 2 masks, CPU: checks that it runs"
    )
    args = ap.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("benchmarks/providers_speed.py needs a CUDA GPU (or --smoke)")
    cases = PROVIDERS if args.providers == "all" else tuple(args.providers.split(","))
    bad = [c for c in cases if c not in PROVIDERS]
    if bad:
        sys.exit(f"unknown providers {bad}; choose among {PROVIDERS}")
    ks = (2,) if args.smoke else tuple(int(v) for v in args.masks.split(","))
    hw = (90, 160) if args.smoke else (900, 1600)
    label_hw = (32, 64) if args.smoke else tuple(int(v) for v in args.label_size.split("x"))
    frames = images(max(args.frames, 1), hw)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = save_models(Path(args.models_dir or tmp) / ("smoke" if args.smoke else "full"), args.smoke)
        for case in cases:
            for k in ks:
                rows.append(time_provider(case, models, k, frames, label_hw, args))
                print(rows[-1], file=sys.stderr, flush=True)
        if args.baseline_images:
            n = min(args.baseline_images, frames.shape[0] * CAMS - 1)
            rows.append(time_amg(models, frames, n, args))
            rows.append(time_pipeline(models, frames, n, args))
    device = "CPU (smoke: tiny models, not a speed figure)" if args.smoke else torch.cuda.get_device_name()
    header = (
        f"{device} | {CAMS} cameras {hw[1]}x{hw[0]}, labels {label_hw[1]}x{label_hw[0]} | "
        f"{'bf16' if args.bf16 else 'fp32'}{', torch.compile' if args.compile else ''} | random weights of the real "
        f"architectures | mean of {max(len(frames) - 1, 1)} frame(s) after a warm-up"
    )
    out = table(rows, header)
    print(out)
    return out


if __name__ == "__main__":
    main()
