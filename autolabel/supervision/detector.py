"""Text-prompted open-vocabulary detection with OWL-ViT / OWLv2 or Grounding DINO (transformers, local folder).

All cameras of a frame go through the detector in one batch; images are resized (OWLv2: padded to a
square first, as its processor does; Grounding DINO: shortest edge to its processor's size, aspect kept)
and normalised on the GPU. Boxes come back in camera pixels with the vocabulary's class ids, after
per-class NMS. `build_detector` picks the class from the folder's config.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .clip import check_model_folder, load_model_folder, load_model_parts
from .config import DetectorConfig
from .naming import Vocabulary

OWL_TYPES = ("owlvit", "owlv2")
GDINO_TYPES = ("grounding-dino",)
DETECTOR_TYPES = OWL_TYPES + GDINO_TYPES


@dataclass
class Detections:
    """boxes (K, 4) xyxy camera pixels; labels (K,) class ids; scores (K,)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor


def model_type(path) -> str:
    """The `model_type` of a transformers folder's config.json ("" when it has none)."""
    import json
    from pathlib import Path

    try:
        return str(json.loads((Path(path) / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError):
        return ""


def build_detector(cfg: DetectorConfig, vocab: Vocabulary, device: torch.device, bf16: bool = True):
    path = check_model_folder(cfg.model, "supervision.detector.model", "OWL-ViT / OWLv2 / Grounding DINO detector")
    kind = model_type(path)
    if kind in GDINO_TYPES:
        return GroundingDinoDetector(cfg, vocab, device, bf16)
    if kind in OWL_TYPES:
        return OwlDetector(cfg, vocab, device, bf16)
    raise DataError(
        f"supervision.detector.model: {path} holds a {kind!r} model; the grounded_sam provider takes one of "
        f"{DETECTOR_TYPES}"
    )


def _select(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, cfg: DetectorConfig) -> Detections:
    """Boxes of one image above the threshold, per-class NMS, at most max_boxes."""
    from torchvision.ops import batched_nms

    keep = scores >= cfg.box_threshold
    b, s, lab = boxes[keep], scores[keep], labels[keep]
    k = batched_nms(b, s, lab, cfg.nms_threshold)[: cfg.max_boxes]
    return Detections(b[k], lab[k], s[k])


def _to_xyxy(cxcywh: torch.Tensor, scale: torch.Tensor, w: int, h: int) -> torch.Tensor:
    boxes = torch.cat([cxcywh[..., :2] - cxcywh[..., 2:] / 2, cxcywh[..., :2] + cxcywh[..., 2:] / 2], -1) * scale
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, w)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, h)
    return boxes


class GroundingDinoDetector:
    """Grounding DINO: one caption "p1 . p2 . ... ." per frame; a query's score for a phrase is the mean
    sigmoid of its logits over the phrase's tokens (the positive map of Grounding DINO's COCO evaluation)."""

    def __init__(self, cfg: DetectorConfig, vocab: Vocabulary, device: torch.device, bf16: bool = True):
        from transformers import GroundingDinoForObjectDetection

        self.model, tok, proc, _ = load_model_parts(
            GroundingDinoForObjectDetection, cfg.model, "supervision.detector.model", "Grounding DINO detector", device
        )
        self.mean = torch.tensor(proc.image_mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(proc.image_std, device=device).view(1, 3, 1, 1)
        size = proc.size
        self.short, self.long = size.get("shortest_edge", 800), size.get("longest_edge", 1333)
        self.cfg, self.vocab, self.device = cfg, vocab, device
        self.dtype = torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32
        caption, spans = "", []
        for p in vocab.prompts:
            start = len(caption)
            caption += p.lower()
            spans.append((start, len(caption)))
            caption += " . "
        enc = tok(caption.strip(), return_offsets_mapping=True, return_tensors="pt")
        n_max = self.model.config.max_text_len
        if enc["input_ids"].shape[1] > n_max:
            raise DataError(
                f"supervision.detector: the detected classes' prompts make {enc['input_ids'].shape[1]} tokens, "
                f"more than the detector's {n_max}; give fewer prompts"
            )
        offsets = enc.pop("offset_mapping")[0].tolist()
        self.tokens = {k: v.to(device) for k, v in enc.items()}
        positive = torch.zeros(len(vocab.prompts), n_max)
        for k, (a, b) in enumerate(spans):
            for t, (o0, o1) in enumerate(offsets):
                if o1 > o0 and o0 >= a and o1 <= b:
                    positive[k, t] = 1
        if (positive.sum(1) == 0).any():
            raise DataError("supervision.detector: a prompt maps to no token of the Grounding DINO tokenizer")
        self.positive = (positive / positive.sum(1, keepdim=True)).to(device)  # (P, max_text_len), rows sum to 1
        self.prompt_ids = torch.tensor([vocab.slot_ids[s] for s in vocab.prompt_slot], device=device)

    @torch.no_grad()
    def detect(self, images: np.ndarray) -> list[Detections]:
        n, h, w, _ = images.shape
        scale = min(self.short / min(h, w), self.long / max(h, w))
        x = torch.from_numpy(np.require(images, requirements="W")).to(self.device).permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(x, (round(h * scale), round(w * scale)), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        tokens = {k: v.expand(n, -1) for k, v in self.tokens.items()}
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.model(pixel_values=x, **tokens)
        probs = out.logits.float().sigmoid()  # (N, queries, max_text_len); positions past the caption are -inf
        best = (probs @ self.positive.T).max(-1)  # (N, queries): best prompt
        boxes = _to_xyxy(
            out.pred_boxes.float(), torch.tensor([w, h, w, h], device=self.device, dtype=torch.float32), w, h
        )
        return [_select(boxes[i], best.values[i], self.prompt_ids[best.indices[i]], self.cfg) for i in range(n)]


class OwlDetector:
    def __init__(self, cfg: DetectorConfig, vocab: Vocabulary, device: torch.device, bf16: bool = True):
        from transformers import AutoConfig, AutoModelForZeroShotObjectDetection

        path = check_model_folder(cfg.model, "supervision.detector.model", "OWL-ViT / OWLv2 detector")
        config = AutoConfig.from_pretrained(path)
        if config.model_type not in OWL_TYPES:
            raise DataError(
                f"supervision.detector.model: {path} holds a {config.model_type!r} model; "
                f"the grounded_sam provider takes one of {OWL_TYPES}"
            )
        self.model, tokenizer, self.mean, self.std = load_model_folder(
            AutoModelForZeroShotObjectDetection,
            cfg.model,
            "supervision.detector.model",
            "OWL-ViT / OWLv2 detector",
            device,
        )
        self.cfg, self.vocab, self.device = cfg, vocab, device
        self.pad_square = config.model_type == "owlv2"
        self.dtype = torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32
        self.size = int(config.vision_config.image_size)
        self.tokens = tokenizer(
            list(vocab.prompts), padding="max_length", max_length=16, truncation=True, return_tensors="pt"
        ).to(device)
        self.prompt_ids = torch.tensor([vocab.slot_ids[s] for s in vocab.prompt_slot], device=device)

    @torch.no_grad()
    def detect(self, images: np.ndarray) -> list[Detections]:
        """(N, H, W, 3) uint8 -> per image Detections."""
        n, h, w, _ = images.shape
        x = torch.from_numpy(np.require(images, requirements="W")).to(self.device).permute(0, 3, 1, 2).float() / 255
        if self.pad_square:  # OWLv2 pads bottom/right to a square with grey, boxes are relative to the square
            side = max(h, w)
            x = F.pad(x, (0, side - w, 0, side - h), value=0.5)
            scale = torch.tensor([side, side, side, side], device=self.device, dtype=torch.float32)
        else:
            scale = torch.tensor([w, h, w, h], device=self.device, dtype=torch.float32)
        x = F.interpolate(x, (self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        ids = self.tokens["input_ids"].repeat(n, 1)
        mask = self.tokens["attention_mask"].repeat(n, 1)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.model(input_ids=ids, attention_mask=mask, pixel_values=x)
        logits = out.logits.float()  # (N, boxes, prompts)
        best = logits.max(-1)
        scores, prompt = best.values.sigmoid(), best.indices
        boxes = _to_xyxy(out.pred_boxes.float(), scale, w, h)
        return [_select(boxes[i], scores[i], self.prompt_ids[prompt[i]], self.cfg) for i in range(n)]
