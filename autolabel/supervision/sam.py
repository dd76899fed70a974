"""segment-anything, batched: every camera of a frame through the image encoder at once (bf16 on CUDA),
point-grid or box prompts through the mask decoder in large batches, and masks produced directly at
the label resolution (never at 1600x900), with no RLE round trip through the CPU.

Masks follow SAM's automatic mask generator (point grid, 3 masks per point, predicted-IoU and
stability filters, box NMS) but are evaluated by sampling the decoder's 256x256 low-resolution logits
at the label pixels' positions: the label image is a resize/crop of the camera image (`ResizeCrop`), so
each label pixel centre maps to one point of SAM's padded 1024x1024 input.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import ResizeCrop
from ..errors import DataError
from .config import SamArch, SamConfig

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def check_sam_checkpoint(checkpoint: str | Path | None) -> Path:
    """The recipe's SAM checkpoint path; a DataError saying what to download when it is unset or missing."""
    if checkpoint is None:
        raise DataError(
            "supervision.sam.checkpoint is not set: download a SAM checkpoint (e.g. sam_vit_h_4b8939.pth "
            "from the segment-anything repository) and give its local path"
        )
    path = Path(checkpoint)
    if not path.is_file():
        raise DataError(
            f"supervision.sam.checkpoint: {path} not found; download the SAM checkpoint of your "
            f"model type (e.g. sam_vit_h_4b8939.pth from the segment-anything repository) and give its path"
        )
    return path


def build_sam(arch: SamArch, checkpoint: str | Path | None):
    """A segment-anything `Sam` of this architecture, loaded from a local checkpoint (None: random weights,
    for speed measurements only)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    emb = arch.image_size // arch.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=arch.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(arch.encoder_global_attn_indexes),
            window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(emb, emb),
            input_image_size=(arch.image_size, arch.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=arch.decoder_depth,
                embedding_dim=arch.prompt_embed_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_num_heads,
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=arch.prompt_embed_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    if checkpoint is not None:
        path = check_sam_checkpoint(checkpoint)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            sam.load_state_dict(state)
        except (RuntimeError, KeyError, EOFError, ValueError) as exc:
            raise DataError(
                f"supervision.sam.checkpoint: {path} does not hold a SAM of this architecture "
                f"(model_type / arch): {str(exc).splitlines()[0]}"
            ) from None
    return sam.eval()


def label_grid(rc: ResizeCrop, fx: float, fy: float, device: torch.device) -> torch.Tensor:
    """(1, h, w, 2) grid_sample coordinates (align_corners=False) of every label pixel centre in a map that
    covers camera pixels [0, 1/fx) x [0, 1/fy): camera x lands at 2 x fx - 1. SAM (resize the long side,
    pad): fx = (input width / camera width) / input size; SAM 2 / SAM 3 (stretch to a square): fx = 1 / W."""
    oh, ow = rc.out_hw
    inv = np.linalg.inv(rc.matrix)
    v, u = np.meshgrid(np.arange(oh) + 0.5, np.arange(ow) + 0.5, indexing="ij")
    x = inv[0, 0] * u + inv[0, 2]
    y = inv[1, 1] * v + inv[1, 2]
    return torch.from_numpy(np.stack([2 * x * fx - 1, 2 * y * fy - 1], -1)[None].astype(np.float32)).to(device)


def label_to_camera(xy: torch.Tensor, rc: ResizeCrop) -> torch.Tensor:
    """(..., 2k) label-pixel coordinates (x, y, x, y, ...) -> camera-pixel coordinates (the inverse resize/crop)."""
    a = rc.matrix
    scale = torch.tensor([a[0, 0], a[1, 1]], device=xy.device, dtype=xy.dtype).repeat(xy.shape[-1] // 2)
    shift = torch.tensor([a[0, 2], a[1, 2]], device=xy.device, dtype=xy.dtype).repeat(xy.shape[-1] // 2)
    return (xy - shift) / scale


@dataclass
class Masks:
    """Masks of one image at the label resolution.

    masks (K, h, w) bool; iou (K,) predicted IoU; stability (K,); boxes (K, 4) xyxy in label pixels.
    """

    masks: torch.Tensor
    iou: torch.Tensor
    stability: torch.Tensor
    boxes: torch.Tensor

    @classmethod
    def empty(cls, hw: tuple[int, int], device: torch.device) -> "Masks":
        z = torch.zeros(0, device=device)
        return cls(torch.zeros(0, *hw, dtype=torch.bool, device=device), z, z, torch.zeros(0, 4, device=device))

    @property
    def quality(self) -> torch.Tensor:
        """(K,) geometric mean of predicted IoU and stability, in [0, 1]."""
        return (self.iou.clamp(0, 1) * self.stability.clamp(0, 1)).sqrt()


class SamMasks:
    """Runs SAM on the cameras of a frame. `images` are (N, H, W, 3) uint8 at the camera resolution."""

    def __init__(self, sam, cfg: SamConfig, device: torch.device, bf16: bool = True):
        self.sam = sam.to(device)
        self.cfg = cfg
        self.device = device
        self.dtype = torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32
        self.size = sam.image_encoder.img_size
        self.mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(PIXEL_STD, device=device).view(1, 3, 1, 1)
        self._grids: dict[tuple, torch.Tensor] = {}

    def input_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        """SAM's resize of the longest side to its input size (segment-anything's ResizeLongestSide)."""
        scale = self.size / max(hw)
        return int(hw[0] * scale + 0.5), int(hw[1] * scale + 0.5)

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, C, 64, 64) image embeddings."""
        n, h, w, _ = images.shape
        x = torch.from_numpy(np.require(images, requirements="W")).to(self.device).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, self.input_hw((h, w)), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        x = F.pad(x, (0, self.size - x.shape[-1], 0, self.size - x.shape[-2]))
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.sam.image_encoder(x).float()

    def _label_grid(self, hw: tuple[int, int], rc: ResizeCrop) -> torch.Tensor:
        """(1, h, w, 2) grid_sample coordinates of every label pixel centre in the low-res logit map
        (one per camera size and resize/crop: the same for every image of a dataset, so kept)."""
        key = (tuple(hw), rc)
        if key not in self._grids:
            self._grids[key] = self._make_label_grid(hw, rc)
        return self._grids[key]

    def _make_label_grid(self, hw: tuple[int, int], rc: ResizeCrop) -> torch.Tensor:
        ih, iw = self.input_hw(hw)
        return label_grid(rc, (iw / hw[1]) / self.size, (ih / hw[0]) / self.size, self.device)

    @torch.no_grad()
    def _decode(self, emb: torch.Tensor, points: torch.Tensor | None, boxes: torch.Tensor | None, multimask: bool):
        """One image embedding (1, C, h, w), prompts in SAM input coordinates -> low-res logits, iou."""
        pe = self.sam.prompt_encoder
        pts = (
            None
            if points is None
            else (points[:, None, :], torch.ones(len(points), 1, device=self.device, dtype=torch.int))
        )
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            sparse, dense = pe(points=pts, boxes=boxes, masks=None)
            low, iou = self.sam.mask_decoder(
                image_embeddings=emb,
                image_pe=pe.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
        return low.float().flatten(0, 1), iou.float().flatten()

    def _finish(
        self, low: torch.Tensor, iou: torch.Tensor, grid: torch.Tensor, filter_quality: bool, min_area: int
    ) -> Masks:
        logits = F.grid_sample(
            low[:, None], grid.expand(len(low), -1, -1, -1), mode="bilinear", padding_mode="border", align_corners=False
        )[:, 0]
        off = self.cfg.stability_score_offset
        hi = (logits > off).flatten(1).sum(1)
        lo = (logits > -off).flatten(1).sum(1)
        stability = hi / lo.clamp(min=1)
        masks = logits > 0
        keep = masks.flatten(1).sum(1) >= min_area
        if filter_quality:
            keep &= stability >= self.cfg.stability_score_thresh
        masks, iou, stability = masks[keep], iou[keep], stability[keep]
        from segment_anything.utils.amg import batched_mask_to_box

        if not len(masks):
            return Masks.empty(tuple(grid.shape[1:3]), self.device)
        return Masks(masks, iou, stability, batched_mask_to_box(masks).float())

    @torch.no_grad()
    def automatic(self, emb: torch.Tensor, hw: tuple[int, int], rc: ResizeCrop) -> Masks:
        """Point-grid masks of one image (emb (1, C, 64, 64)) at the label resolution rc.out_hw."""
        from segment_anything.utils.amg import build_point_grid
        from torchvision.ops import batched_nms

        ih, iw = self.input_hw(hw)
        grid_pts = torch.from_numpy(build_point_grid(self.cfg.points_per_side)).float().to(self.device)
        grid_pts = grid_pts * torch.tensor([iw, ih], device=self.device)
        label_grid = self._label_grid(hw, rc)
        parts = []
        for start in range(0, len(grid_pts), self.cfg.points_per_batch):
            low, iou = self._decode(emb, grid_pts[start : start + self.cfg.points_per_batch], None, multimask=True)
            keep = iou >= self.cfg.pred_iou_thresh
            if keep.any():
                parts.append(self._finish(low[keep], iou[keep], label_grid, True, self.cfg.min_mask_area))
        if not parts:
            return Masks.empty(rc.out_hw, self.device)
        m = Masks(*(torch.cat([getattr(p, f) for p in parts]) for f in ("masks", "iou", "stability", "boxes")))
        keep = batched_nms(m.boxes, m.iou, torch.zeros_like(m.iou, dtype=torch.long), self.cfg.box_nms_thresh)
        m = Masks(m.masks[keep], m.iou[keep], m.stability[keep], m.boxes[keep])
        if self.cfg.max_masks is not None and len(m.masks) > self.cfg.max_masks:
            top = m.quality.topk(self.cfg.max_masks).indices
            m = Masks(m.masks[top], m.iou[top], m.stability[top], m.boxes[top])
        return m

    @torch.no_grad()
    def from_boxes(self, emb: torch.Tensor, hw: tuple[int, int], rc: ResizeCrop, boxes: torch.Tensor) -> Masks:
        """One mask per box ((K, 4) xyxy in camera pixels), all kept (the detector already chose them)."""
        if len(boxes) == 0:
            return Masks.empty(rc.out_hw, self.device)
        ih, iw = self.input_hw(hw)
        scale = torch.tensor([iw / hw[1], ih / hw[0]] * 2, device=self.device)
        low, iou = self._decode(emb, None, boxes.to(self.device).float() * scale, multimask=False)
        # min_area 0: one mask per box, even a tiny one, so that masks and detections stay aligned
        return self._finish(low, iou, self._label_grid(hw, rc), False, 0)
