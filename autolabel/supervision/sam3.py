"""SAM 3 (transformers `Sam3Model`, local folder) prompted with the vocabulary's phrases: masks and scores
straight from the model.

Every camera goes through the vision encoder once; each phrase of the vocabulary (the same phrases CLIP
naming uses, several per class) is decoded against those features (`prompts_per_batch` at a time). An
instance's score is sigmoid(query logit) x sigmoid(presence logit), as Sam3Processor's post-processing
computes it; its mask logits (288x288 over the image stretched to a square) are sampled directly at the
label pixels. The mask's class is its phrase's class; overlaps are left to `paint` (higher score wins).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import ResizeCrop
from .clip import load_model_parts
from .config import Sam3Config
from .naming import Vocabulary
from .sam import label_grid


class Sam3Segmenter:
    def __init__(self, cfg: Sam3Config, vocab: Vocabulary, device: torch.device, bf16: bool = True):
        from transformers import Sam3Model

        self.model, tok, proc, _ = load_model_parts(
            Sam3Model, cfg.model, "supervision.sam3.model", "SAM 3 model (e.g. facebook/sam3)", device
        )
        self.cfg, self.vocab, self.device = cfg, vocab, device
        self.dtype = torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32
        self.size = (proc.size["height"], proc.size["width"])
        self.mean = torch.tensor(proc.image_mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(proc.image_std, device=device).view(1, 3, 1, 1) * 255
        n_pos = self.model.config.text_config.max_position_embeddings
        text = tok(
            list(vocab.prompts), padding="max_length", max_length=min(32, n_pos), truncation=True, return_tensors="pt"
        )
        self.ids, self.att = text["input_ids"].to(device), text["attention_mask"].to(device)
        self.prompt_ids = torch.tensor([vocab.slot_ids[s] for s in vocab.prompt_slot], device=device)
        self.mask_logit = math.log(cfg.mask_threshold / (1 - cfg.mask_threshold))
        self._grids: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def embed(self, images: np.ndarray):
        """(N, H, W, 3) uint8 -> the vision encoder's output for the N images (stretched to the input square)."""
        x = torch.from_numpy(np.require(images, requirements="W")).to(self.device).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, self.size, mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.model.get_vision_features(pixel_values=x)

    def _grid(self, hw: tuple[int, int], rc: ResizeCrop) -> torch.Tensor:
        key = (tuple(hw), rc)
        if key not in self._grids:
            self._grids[key] = label_grid(rc, 1 / hw[1], 1 / hw[0], self.device)
        return self._grids[key]

    @torch.no_grad()
    def segment(self, vision, i: int, hw: tuple[int, int], rc: ResizeCrop):
        """Image i of `vision` -> masks (K, h, w) bool at rc.out_hw, labels (K,) class ids, scores (K,)."""
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        grid = self._grid(hw, rc)
        masks, labels, scores = [], [], []
        for s in range(0, len(self.ids), self.cfg.prompts_per_batch):
            ids, att = self.ids[s : s + self.cfg.prompts_per_batch], self.att[s : s + self.cfg.prompts_per_batch]
            n = len(ids)
            one = Sam3VisionEncoderOutput(
                fpn_hidden_states=tuple(f[i : i + 1].expand(n, *f.shape[1:]) for f in vision.fpn_hidden_states),
                fpn_position_encoding=tuple(f[i : i + 1].expand(n, *f.shape[1:]) for f in vision.fpn_position_encoding),
            )
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                out = self.model(vision_embeds=one, input_ids=ids, attention_mask=att)
            score = out.pred_logits.float().sigmoid() * out.presence_logits.float().sigmoid()  # (n, Q)
            keep = score >= self.cfg.score_threshold
            if not keep.any():
                continue
            p, q = keep.nonzero(as_tuple=True)
            low = out.pred_masks.float()[p, q]  # (k, 288, 288)
            logits = F.grid_sample(
                low[:, None],
                grid.expand(len(low), -1, -1, -1),
                mode="bilinear",
                padding_mode="border",
                align_corners=False,
            )[:, 0]
            masks.append(logits > self.mask_logit)
            labels.append(self.prompt_ids[s + p])
            scores.append(score[p, q])
        if not masks:
            z = torch.zeros(0, device=self.device)
            return torch.zeros(0, *rc.out_hw, dtype=torch.bool, device=self.device), z.long(), z
        masks, labels, scores = torch.cat(masks), torch.cat(labels), torch.cat(scores)
        if self.cfg.max_masks is not None and len(scores) > self.cfg.max_masks:
            top = scores.topk(self.cfg.max_masks).indices
            masks, labels, scores = masks[top], labels[top], scores[top]
        return masks, labels, scores
