"""SAM 2 automatic masks (transformers `Sam2Model`, local folder), on the same path as SAM's (`SamMasks`).

Like the transformers ``mask-generation`` pipeline: a point grid prompts the mask decoder (3 masks per
point), predicted-IoU and stability filters, box NMS; unlike it, logits are sampled directly at the label
pixels (never upsampled to 1600x900) and every camera of a frame goes through the image encoder at once.
SAM 2's processor stretches the image to a square (no padding), so camera x maps to input x * size / W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .clip import check_model_folder
from .config import SamConfig
from .sam import SamMasks


@dataclass
class Sam2Embedding:
    """The image encoder's feature pyramid of N images (high-resolution levels first); [i:j] slices images."""

    levels: list[torch.Tensor]

    def __getitem__(self, s: slice) -> "Sam2Embedding":
        return Sam2Embedding([f[s] for f in self.levels])

    def __len__(self) -> int:
        return len(self.levels[0])


def load_sam2(path: str | None, device: torch.device):
    """(Sam2Model in eval mode, image mean, image std) from a local transformers folder."""
    from transformers import AutoImageProcessor, Sam2Model

    folder = check_model_folder(path, "supervision.sam2.model", "SAM 2 model (e.g. facebook/sam2.1-hiera-large)")
    try:
        model = Sam2Model.from_pretrained(folder).to(device).eval()
        proc = AutoImageProcessor.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"supervision.sam2.model: cannot load a SAM 2 model from {folder}: {str(exc).splitlines()[0]}"
        ) from None
    return model, proc.image_mean, proc.image_std


class Sam2Masks(SamMasks):
    """SAM 2's masks of a frame's cameras at the label resolution (`automatic`, `from_boxes` as SamMasks)."""

    def __init__(self, model, mean, std, cfg: SamConfig, device: torch.device, bf16: bool = True):
        self.sam = model.to(device)
        self.cfg, self.device = cfg, device
        self.dtype = torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32
        self.size = int(model.config.prompt_encoder_config.image_size)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self._grids: dict[tuple, torch.Tensor] = {}

    def input_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        return self.size, self.size  # stretched to a square, as Sam2Processor does

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> Sam2Embedding:
        x = torch.from_numpy(np.require(images, requirements="W")).to(self.device).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, (self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return Sam2Embedding([f.float() for f in self.sam.get_image_embeddings(x)])

    @torch.no_grad()
    def _decode(self, emb: Sam2Embedding, points, boxes, multimask: bool):
        kw = {}
        if points is not None:
            kw["input_points"] = points[None, :, None, :]  # (1 image, P prompts, 1 point, xy) in input pixels
            kw["input_labels"] = torch.ones(1, len(points), 1, dtype=torch.int, device=self.device)
        if boxes is not None:
            kw["input_boxes"] = boxes[None]
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.sam(image_embeddings=emb.levels, multimask_output=multimask, **kw)
        return out.pred_masks.float()[0].flatten(0, 1), out.iou_scores.float()[0].flatten()
