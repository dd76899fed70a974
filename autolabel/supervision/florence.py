"""Florence-2 (transformers `Florence2ForConditionalGeneration`, local folder) names masks: the vision-LLM route.

Each mask is asked Florence-2's region-to-category question about its box ("What is the region
<loc_x1><loc_y1><loc_x2><loc_y2>?", coordinates quantised to 1000 bins of the camera image, which the
model sees whole, resized from full resolution to its input size). Instead of free generation, the answer
is scored against the closed vocabulary: a phrase's logit is the log-likelihood of its tokens followed by
the end of a category (any location token, or the end of the sequence), teacher-forced in one decoder
pass. The image is encoded once per camera; the language encoder once per mask; the decoder once per
(mask, phrase) pair. Logits go through the same naming as CLIP's (log-sum-exp over a class's phrases).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.transforms import ResizeCrop
from ..errors import DataError
from .clip import load_model_parts
from .config import VlmConfig
from .naming import Vocabulary
from .sam import label_to_camera

FLORENCE_TYPES = ("florence2",)
QUESTION = "What is the region {}?"  # Florence2Processor's <REGION_TO_CATEGORY> prompt
BINS = 1000


class FlorenceNamer:
    def __init__(self, cfg: VlmConfig, vocab: Vocabulary, device: torch.device, bf16: bool = True):
        from transformers import Florence2ForConditionalGeneration

        self.model, tok, proc, folder = load_model_parts(
            Florence2ForConditionalGeneration,
            cfg.model,
            "supervision.vlm.model",
            "Florence-2 model (e.g. florence-community/Florence-2-large)",
            device,
        )
        self.loc = tok.convert_tokens_to_ids([f"<loc_{i}>" for i in range(BINS)])
        if tok.unk_token_id in self.loc:
            raise DataError(
                f"supervision.vlm.model: the tokenizer in {folder} has no <loc_0>..<loc_999> tokens (not Florence-2's)"
            )
        self.cfg, self.vocab, self.device, self.tok = cfg, vocab, device, tok
        self.dtype = torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32
        size = proc.size
        self.hw = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
        self.mean = torch.tensor(proc.image_mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(proc.image_std, device=device).view(1, 3, 1, 1)
        # phrases as decoder targets: [decoder start, <s>, phrase tokens, pad...]; the token after the
        # phrase is scored as "a category ends here" (a location token or </s>)
        cfg_text = self.model.config.text_config
        start, bos = cfg_text.decoder_start_token_id, tok.bos_token_id
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in vocab.prompts]
        n = max(len(i) for i in ids)
        pad = tok.pad_token_id
        self.targets = torch.tensor([[start, bos, *i, *[pad] * (n - len(i))] for i in ids], device=device)
        self.lengths = torch.tensor([len(i) for i in ids], device=device)
        self.ends = torch.tensor([*self.loc, tok.eos_token_id], device=device)

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) float [0, 1] full-resolution camera image -> (1, T, D) projected image tokens."""
        x = F.interpolate(image[None], self.hw, mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.model.get_image_features(pixel_values=x).pooler_output

    def questions(self, boxes_cam: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, 4) xyxy camera-pixel boxes -> (M, L) token ids of "<s>What is the region <loc..>x4?</s>" and
        their attention mask."""
        h, w = hw
        q = (
            torch.stack(
                [
                    boxes_cam[:, 0] * BINS / w,
                    boxes_cam[:, 1] * BINS / h,
                    boxes_cam[:, 2] * BINS / w,
                    boxes_cam[:, 3] * BINS / h,
                ],
                1,
            )
            .floor()
            .clamp(0, BINS - 1)
            .long()
        )
        texts = [QUESTION.format("".join(f"<loc_{v}>" for v in row)) for row in q.tolist()]
        tok = self.tok(texts, return_tensors="pt", padding=True)
        return tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)

    @torch.no_grad()
    def prompt_logits(
        self, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, rc: ResizeCrop
    ) -> torch.Tensor:
        """image (3, H, W) float [0, 1] full resolution; masks (M, h, w), boxes (M, 4) at the label resolution
        -> (M, P) log-likelihoods of the vocabulary's phrases as the category of each mask's box."""
        from transformers.modeling_outputs import BaseModelOutput

        P = len(self.vocab.prompts)
        if len(masks) == 0:
            return torch.zeros(0, P, device=self.device)
        hw = tuple(image.shape[1:])
        cam = label_to_camera(
            boxes.float() + torch.tensor([0, 0, 1, 1], device=boxes.device), rc
        )  # inclusive -> exclusive
        feats = self.image_features(image)
        emb_layer = self.model.get_input_embeddings()
        out = torch.empty(len(masks), P, device=self.device)
        per = max(1, self.cfg.batch_size // P)  # masks per decoder pass
        lm = self.model.model.language_model
        for s in range(0, len(masks), per):
            ids, att = self.questions(cam[s : s + per], hw)
            m = len(ids)
            att = torch.cat([torch.ones(m, feats.shape[1], dtype=att.dtype, device=self.device), att], 1)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                x = torch.cat([feats.expand(m, -1, -1).to(emb_layer.weight.dtype), emb_layer(ids)], 1)
                enc = lm.encoder(inputs_embeds=x, attention_mask=att).last_hidden_state  # (m, T + L, D)
                logits = self.model(
                    encoder_outputs=BaseModelOutput(enc.repeat_interleave(P, 0)),
                    attention_mask=att.repeat_interleave(P, 0),
                    decoder_input_ids=self.targets.repeat(m, 1),
                ).logits.float()
            out[s : s + m] = self._score(logits.log_softmax(-1)).view(m, P)
        return out

    def _score(self, logp: torch.Tensor) -> torch.Tensor:
        """(m * P, n + 1, V) log-probabilities after [start, <s>, phrase...] -> (m * P,) phrase log-likelihoods."""
        P = len(self.vocab.prompts)
        tgt = self.targets[:, 2:].repeat(len(logp) // P, 1)  # phrase tokens, predicted at positions 1..n
        lengths = self.lengths.repeat(len(logp) // P)
        n = tgt.shape[1]
        tok = logp[:, 1 : 1 + n].gather(-1, tgt[..., None])[..., 0]
        tok = torch.where(torch.arange(n, device=logp.device)[None] < lengths[:, None], tok, torch.zeros_like(tok))
        end = logp[torch.arange(len(logp), device=logp.device), 1 + lengths][:, self.ends].logsumexp(-1)
        return tok.sum(1) + end
