"""A CLIP-family model (transformers, local folder) that scores mask crops against the vocabulary.

Each mask becomes one CLIP input: its box (plus a margin) cut from the full-resolution camera image with
`roi_align` (all masks of an image in one GPU call; the masks themselves live at the label resolution and
their boxes are mapped back through the resize/crop), pixels outside the mask replaced by the model's
mean colour so that CLIP sees the object and not its surroundings.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.transforms import ResizeCrop
from ..errors import DataError
from .config import ClipConfig
from .naming import Vocabulary


def check_model_folder(path: str | None, field: str, what: str) -> Path:
    if path is None:
        raise DataError(
            f"{field} is not set: give the local folder of a {what} (config.json, weights, tokenizer and "
            f"preprocessor files, e.g. saved with save_pretrained); nothing is downloaded at run time"
        )
    p = Path(path)
    if not (p / "config.json").is_file():
        raise DataError(
            f"{field}: {p} is not a transformers model folder (no config.json); download a {what} "
            f"into it (for example with huggingface-cli download) and point the recipe there"
        )
    return p


def load_model_parts(model_cls, path: str | None, field: str, what: str, device: torch.device):
    """(model in eval mode on `device`, tokenizer, image processor, folder) from a local transformers folder;
    any loading failure is a DataError naming the recipe field."""
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own tqdm bar is the one progress display
    folder = check_model_folder(path, field, what)
    try:
        model = model_cls.from_pretrained(folder).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        processor = AutoImageProcessor.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise DataError(f"{field}: cannot load a {what} from {folder}: {str(exc).splitlines()[0]}") from None
    return model, tokenizer, processor, folder


def load_model_folder(model_cls, path: str | None, field: str, what: str, device: torch.device):
    """(model in eval mode on `device`, tokenizer, image mean (1, 3, 1, 1), image std) from a local
    transformers folder (load_model_parts)."""
    model, tokenizer, processor, _ = load_model_parts(model_cls, path, field, what, device)
    mean = torch.tensor(processor.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, device=device).view(1, 3, 1, 1)
    return model, tokenizer, mean, std


class ClipScorer:
    """Embeds the vocabulary once; `prompt_logits(image, masks, boxes)` scores masks against it."""

    def __init__(self, cfg: ClipConfig, vocab: Vocabulary, device: torch.device, bf16: bool = True):
        from transformers import CLIPModel

        self.model, tokenizer, self.mean, self.std = load_model_folder(
            CLIPModel, cfg.model, "supervision.clip.model", "CLIP model", device
        )
        self.cfg, self.vocab, self.device = cfg, vocab, device
        self.dtype = torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32
        self.size = int(self.model.config.vision_config.image_size)
        with torch.no_grad():
            texts = [t.format(p) for p in vocab.prompts for t in cfg.templates]
            tok = tokenizer(texts, padding=True, return_tensors="pt").to(device)
            emb = self._text_features(tok)
            emb = emb.view(len(vocab.prompts), len(cfg.templates), -1).mean(1)  # template ensemble per prompt
            self.text = torch.nn.functional.normalize(emb, dim=-1)
            self.scale = self.model.logit_scale.exp().float()

    @staticmethod
    def _features(out) -> torch.Tensor:
        # transformers < 5 returns a tensor, 5.x a model output with pooler_output holding the projection
        return out if torch.is_tensor(out) else out.pooler_output

    def _text_features(self, tok) -> torch.Tensor:
        return self._features(self.model.get_text_features(**tok)).float()

    @torch.no_grad()
    def prompt_logits(
        self, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, rc: ResizeCrop
    ) -> torch.Tensor:
        """image (3, H, W) float in [0, 1], the full-resolution camera image; masks (M, h, w) bool and boxes
        (M, 4) xyxy at the label resolution rc.out_hw -> (M, P) scaled similarities."""
        if len(masks) == 0:
            return torch.zeros(0, len(self.vocab.prompts), device=self.device)
        x = mask_crops(
            image, masks, boxes, rc, self.size, self.cfg.crop_margin, self.mean, self.std, self.cfg.batch_size
        )
        out = []
        for crop in x:
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                emb = self._features(self.model.get_image_features(pixel_values=crop)).float()
            out.append(self.scale * torch.nn.functional.normalize(emb, dim=-1) @ self.text.T)
        return torch.cat(out)


def crop_rois(boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """(M, 4) xyxy boxes -> square (M, 4) xyxy regions around them, `margin` of the box size on each side."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1)
    side = wh.max(1).values * (1 + 2 * margin)  # square crops keep the namer's aspect ratio
    centre = (boxes[:, :2] + boxes[:, 2:] + 1) / 2
    return torch.cat([centre - side[:, None] / 2, centre + side[:, None] / 2], 1)


def mask_crops(
    image: torch.Tensor,
    masks: torch.Tensor,
    boxes: torch.Tensor,
    rc: ResizeCrop,
    size: int,
    margin: float,
    mean: torch.Tensor,
    std: torch.Tensor,
    batch_size: int,
):
    """Normalised (n, 3, size, size) crops, in batches of `batch_size`, one per mask: the mask's square
    region is cut from the full-resolution camera image `image` (3, H, W) (its label-resolution box mapped
    back through the resize/crop, `roi_align` averaging over the pixels each output pixel covers), and the
    pixels outside the mask (sampled from the label-resolution mask over the same region) get `mean`."""
    from torchvision.ops import roi_align

    from .sam import label_to_camera

    rois = crop_rois(boxes.float(), margin)
    cam_rois = label_to_camera(rois, rc)
    for s in range(0, len(masks), batch_size):
        n = len(rois[s : s + batch_size])
        idx = torch.arange(n, device=masks.device, dtype=torch.float32)[:, None]
        crop = roi_align(
            image[None], torch.cat([torch.zeros_like(idx), cam_rois[s : s + n]], 1), (size, size), aligned=True
        )
        inside = roi_align(
            masks[s : s + n, None].float(), torch.cat([idx, rois[s : s + n]], 1), (size, size), aligned=True
        )
        crop = crop * inside + mean * (1 - inside)
        yield (crop - mean) / std
