"""Text-prompted open-vocabulary detection with OWL-ViT / OWLv2 (transformers, local folder).

All cameras of a frame go through the detector in one batch; images are resized (OWLv2: padded to a
square first, as its processor does) and normalised on the GPU. Boxes come back in camera pixels with
the vocabulary's class ids, after per-class NMS.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .clip import check_model_folder, load_model_folder
from .config import DetectorConfig
from .naming import Vocabulary

OWL_TYPES = ("owlvit", "owlv2")


@dataclass
class Detections:
    """boxes (K, 4) xyxy camera pixels; labels (K,) class ids; scores (K,)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor


class OwlDetector:
    def __init__(self, cfg: DetectorConfig, vocab: Vocabulary, device: torch.device, bf16: bool = True):
        from transformers import AutoConfig, AutoModelForZeroShotObjectDetection

        path = check_model_folder(cfg.model, "supervision.detector.model", "OWL-ViT / OWLv2 detector")
        config = AutoConfig.from_pretrained(path)
        if config.model_type not in OWL_TYPES:
            raise DataError(f"supervision.detector.model: {path} holds a {config.model_type!r} model; "
                            f"the grounded_sam provider takes one of {OWL_TYPES}")
        self.model, tokenizer, self.mean, self.std = load_model_folder(
            AutoModelForZeroShotObjectDetection, cfg.model, "supervision.detector.model", "OWL-ViT / OWLv2 detector", device)
        self.cfg, self.vocab, self.device = cfg, vocab, device
        self.pad_square = config.model_type == "owlv2"
        self.dtype = torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32
        self.size = int(config.vision_config.image_size)
        self.tokens = tokenizer(list(vocab.prompts), padding="max_length", max_length=16, truncation=True,
                                return_tensors="pt").to(device)
        self.prompt_ids = torch.tensor([vocab.slot_ids[s] for s in vocab.prompt_slot], device=device)

    @torch.no_grad()
    def detect(self, images: np.ndarray) -> list[Detections]:
        """(N, H, W, 3) uint8 -> per image Detections."""
        from torchvision.ops import batched_nms

        n, h, w, _ = images.shape
        x = torch.from_numpy(np.require(images, requirements='W')).to(self.device).permute(0, 3, 1, 2).float() / 255
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
        cxcywh = out.pred_boxes.float()
        boxes = torch.cat([cxcywh[..., :2] - cxcywh[..., 2:] / 2, cxcywh[..., :2] + cxcywh[..., 2:] / 2], -1) * scale
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, w)
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, h)
        result = []
        for i in range(n):
            keep = scores[i] >= self.cfg.box_threshold
            b, s, lab = boxes[i][keep], scores[i][keep], self.prompt_ids[prompt[i][keep]]
            k = batched_nms(b, s, lab, self.cfg.nms_threshold)[: self.cfg.max_boxes]
            result.append(Detections(b[k], lab[k], s[k]))
        return result
