"""Speed of 2D supervision: seconds per 6-camera frame for ``sam_clip`` (SAM vit_h / vit_b + CLIP ViT-B/16).

Randomly initialised weights of the real architectures (speed does not depend on the weights). With
random weights the predicted-IoU and stability filters would pass almost nothing, so ours runs with both
at 0: every one of the 32x32 x 3 candidate masks goes through stability scoring and NMS, and the
survivors through CLIP. Baseline in the same run: segment-anything's own SamAutomaticMaskGenerator (one
image at a time, fp32, masks upsampled to full resolution) at its default thresholds -- at thresholds 0
its per-mask RLE encoding on the CPU takes minutes per image, so the baseline is timed doing less work
than ours, which makes the ratio conservative.

    python benchmarks/supervision.py [--models vit_h,vit_b] [--frames 3] [--baseline-images 2]
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
from autolabel.supervision.config import SAM_PRESETS, ClipConfig, SamConfig, SupervisionConfig  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def images(n: int, seed: int) -> np.ndarray:
    """Six 1600x900 camera images with structure (smooth blobs), not noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (n, 6, 9, 16, 3)).astype(np.float32)
    t = torch.from_numpy(small).flatten(0, 1).permute(0, 3, 1, 2)
    big = torch.nn.functional.interpolate(t, (900, 1600), mode="bicubic").clamp(0, 255)
    return big.permute(0, 2, 3, 1).reshape(n, 6, 900, 1600, 3).to(torch.uint8).numpy()


def save_clip_b16(folder: Path) -> str:
    from tiny_models import save_clip

    return str(
        save_clip(
            folder,
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
    )


def time_ours(
    model_type: str, clip_path: str, frames: np.ndarray, label_hw: tuple[int, int], bf16: bool, device: str = "cuda"
) -> dict:
    from autolabel.data.frame import Camera, Frame, Lidar
    from autolabel.supervision.providers import SamClipLabels
    from autolabel.supervision.sam import build_sam

    cfg = SupervisionConfig(
        provider="sam_clip",
        device=device,
        bf16=bf16,
        min_confidence=0.0,
        sam=SamConfig(model_type=model_type, pred_iou_thresh=0.0, stability_score_thresh=0.0),
        clip=ClipConfig(model=clip_path),
    )
    provider = SamClipLabels(cfg, torch.device(device), sam_model=build_sam(SAM_PRESETS[model_type], None))
    eye = np.eye(4)
    K = np.array([[1266.0, 0, 800], [0, 1266.0, 450], [0, 0, 1]])
    rc = ResizeCrop.fit((900, 1600), label_hw)
    times, masks = [], []
    for k, imgs in enumerate(frames):
        cams = tuple(Camera(f"CAM{i}", imgs[i], K, eye, eye, 0, "", (900, 1600)) for i in range(6))
        frame = Frame(
            "t", "s", 0, cams, Lidar(np.zeros((0, 5), np.float32), np.zeros(0, np.float32), eye, eye, 0, ""), None
        )
        _sync()
        t0 = time.perf_counter()
        sem, conf = provider.label(frame, rc)[:2]
        _sync()
        if k > 0:  # the first frame pays for cuDNN / allocator warm-up
            times.append(time.perf_counter() - t0)
        masks.append(int(len(np.unique(sem))))
    emb = provider.sam.embed(frames[0])
    _sync()
    t0 = time.perf_counter()
    for _ in range(3):
        emb = provider.sam.embed(frames[0])
    _sync()
    t_embed = (time.perf_counter() - t0) / 3
    m = provider.sam.automatic(emb[:1], (900, 1600), rc)
    return {
        "frame_s": float(np.mean(times)),
        "embed_s": t_embed,
        "masks_per_image": len(m.masks),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
    }


def time_baseline(model_type: str, frames: np.ndarray, n_images: int) -> float:
    from segment_anything import SamAutomaticMaskGenerator

    from autolabel.supervision.sam import build_sam

    sam = build_sam(SAM_PRESETS[model_type], None).cuda()
    gen = SamAutomaticMaskGenerator(sam)
    gen.generate(frames[0, 0])  # warm-up
    _sync()
    t0 = time.perf_counter()
    for i in range(n_images):
        gen.generate(frames[0, 1 + i])
    _sync()
    return (time.perf_counter() - t0) / n_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vit_h,vit_b")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--baseline-images", type=int, default=2)
    ap.add_argument("--label-size", default="256x704")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/supervision.py needs a CUDA GPU")
    label_hw = tuple(int(v) for v in args.label_size.split("x"))
    frames = images(args.frames + 1, 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = save_clip_b16(Path(tmp) / "clip")
        for model_type in args.models.split(","):
            for bf16 in (True, False):
                torch.cuda.reset_peak_memory_stats()
                r = time_ours(model_type, clip, frames, label_hw, bf16)
                rows.append(
                    (
                        model_type,
                        "ours " + ("bf16" if bf16 else "fp32"),
                        r["frame_s"],
                        r["frame_s"] / 6,
                        r["embed_s"] / 6,
                        r["masks_per_image"],
                        r["peak_gib"],
                    )
                )
                print(rows[-1], flush=True)
            torch.cuda.empty_cache()
            if args.baseline_images:
                b = time_baseline(model_type, frames, args.baseline_images)
                rows.append(
                    (model_type, "SamAutomaticMaskGenerator fp32 (SAM only)", 6 * b, b, float("nan"), -1, float("nan"))
                )
                print(rows[-1], flush=True)
            torch.cuda.empty_cache()
    print(
        f"\n{torch.cuda.get_device_name()} | 1600x900 cameras, labels at {label_hw[1]}x{label_hw[0]}, "
        f"32x32 points, thresholds 0, CLIP ViT-B/16"
    )
    print(
        f"{'SAM':<6} {'pipeline':<44} {'s/frame':>8} {'s/image':>8} {'embed/img':>10} {'masks/img':>9} {'peak GiB':>9}"
    )
    for r in rows:
        print(f"{r[0]:<6} {r[1]:<44} {r[2]:>8.3f} {r[3]:>8.3f} {r[4]:>10.3f} {r[5]:>9d} {r[6]:>9.1f}")


if __name__ == "__main__":
    main()
