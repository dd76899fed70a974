"""Naming masks with a vocabulary and painting them into a label map (pure tensor logic, no models).

A vocabulary maps each Occ3D class (and ``ignore``) to prompts. A mask's similarity to every prompt
becomes a class logit by log-sum-exp over that class's prompts (the best-matching synonym dominates,
and adding synonyms does not split a class's probability); a softmax over classes gives p. The label
is the arg-max class (``ignore`` -> 255), its confidence the margin p1 - p2 times the mask's quality; its
runner-ups are the next classes by p, each with its p scaled as the name's p1 was (p * confidence / p1), so
that a mask never votes more for a runner-up than for its name (what fusion sums over views).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from occnet.classes import IGNORE_ID, class_id

from .config import IGNORE_KEY


@dataclass(frozen=True)
class Vocabulary:
    """Flattened prompts: prompts[k] belongs to class slot prompt_slot[k]; slot_ids[s] is the label id
    (0..16 or 255 for ignore) of slot s."""

    prompts: tuple[str, ...]
    prompt_slot: tuple[int, ...]
    slot_ids: tuple[int, ...]

    @classmethod
    def from_mapping(cls, vocab: dict[str, list[str]], classes: tuple[str, ...] | None = None) -> "Vocabulary":
        """`classes` restricts the vocabulary to those class names (plus ignore)."""
        prompts, slots, ids = [], [], []
        for name, plist in vocab.items():
            if classes is not None and name != IGNORE_KEY and name not in classes:
                continue
            ids.append(IGNORE_ID if name == IGNORE_KEY else class_id(name))
            for p in plist:
                prompts.append(p)
                slots.append(len(ids) - 1)
        if not ids:
            raise ValueError("the vocabulary names none of the requested classes")
        return cls(tuple(prompts), tuple(slots), tuple(ids))


def class_probabilities(prompt_logits: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    """(M, P) scaled prompt similarities -> (M, S) class-slot probabilities."""
    slot = torch.tensor(vocab.prompt_slot, device=prompt_logits.device)
    n_slots = len(vocab.slot_ids)
    per_slot = torch.full(
        (prompt_logits.shape[0], n_slots, prompt_logits.shape[1]),
        float("-inf"),
        device=prompt_logits.device,
        dtype=prompt_logits.dtype,
    )
    per_slot[:, slot, torch.arange(prompt_logits.shape[1], device=prompt_logits.device)] = prompt_logits
    return per_slot.logsumexp(-1).softmax(-1)


def name_masks(probs: torch.Tensor, quality: torch.Tensor, vocab: Vocabulary) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, S) class probabilities and (M,) mask quality -> (M,) label ids (int64) and (M,) confidence.

    confidence = (p1 - p2) * quality; with one class slot the margin is p1.
    """
    ids = torch.tensor(vocab.slot_ids, device=probs.device)
    if probs.shape[1] >= 2:
        top = probs.topk(2, dim=1)
        margin = top.values[:, 0] - top.values[:, 1]
        best = top.indices[:, 0]
    else:
        margin, best = probs[:, 0], torch.zeros(len(probs), dtype=torch.long, device=probs.device)
    return ids[best], margin * quality


def runner_up_names(
    probs: torch.Tensor, quality: torch.Tensor, vocab: Vocabulary, r: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, S) class probabilities and (M,) mask quality -> the r runner-up classes of each mask: ids (M, r) int64
    (the slots ranked 2 .. r + 1 by p; 255 for the ignore slot and where there are fewer slots) and confidence
    (M, r) = p * (p1 - p2) / p1 * quality, the name's confidence (name_masks) times p / p1: on the name's scale,
    never above it (0 where the id is 255)."""
    ids = torch.tensor(vocab.slot_ids, device=probs.device)
    m, k = probs.shape[0], min(r, max(probs.shape[1] - 1, 0))
    out = torch.full((m, r), IGNORE_ID, dtype=torch.long, device=probs.device)
    conf = torch.zeros((m, r), dtype=torch.float32, device=probs.device)
    if k:
        top = probs.topk(k + 1, dim=1)
        p1 = top.values[:, :1]
        scale = (p1 - top.values[:, 1:2]) / p1.clamp_min(1e-12) * quality[:, None]  # the name's confidence / p1
        out[:, :k] = ids[top.indices[:, 1:]]
        conf[:, :k] = (top.values[:, 1:] * scale).float()
        conf[out == IGNORE_ID] = 0
    return out, conf


Painted = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def paint(
    masks: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor,
    min_score: float,
    base: Painted | None = None,
    runner_ups: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Painted:
    """Paint masks into a label map; where masks overlap the higher score wins.

    masks (M, h, w) bool, labels (M,) ids (255 = ignore), scores (M,) in [0, 1], runner_ups (ids (M, R),
    confidence (M, R)) or None. Masks scoring below `min_score` are dropped. Returns semantics (h, w) uint8
    (255 where nothing was painted), confidence (h, w) float32 (0 there; an ignore mask also gives 0) and the
    painted masks' runner-ups (R, h, w) uint8 / float32 (255 / 0 where none; None when neither the masks nor
    `base` have any). `base` = a painted map to paint over instead of an empty one.
    """
    h, w = masks.shape[1:]
    dev = masks.device
    if base is None:
        sem = torch.full((h, w), IGNORE_ID, dtype=torch.uint8, device=dev)
        conf = torch.zeros((h, w), dtype=torch.float32, device=dev)
        alt = alt_conf = None
    else:
        sem, conf = base[0].clone(), base[1].clone()
        alt, alt_conf = (None, None) if base[2] is None else (base[2].clone(), base[3].clone())
    if runner_ups is not None and alt is None:
        r = runner_ups[0].shape[1]
        alt = torch.full((r, h, w), IGNORE_ID, dtype=torch.uint8, device=dev)
        alt_conf = torch.zeros((r, h, w), dtype=torch.float32, device=dev)
    keep = scores >= min_score
    masks, labels, scores = masks[keep], labels[keep], scores[keep]
    if len(masks) == 0:
        return sem, conf, alt, alt_conf
    # Owner of each pixel = the covering mask of highest score: sort ascending, take the last covering index.
    order = scores.argsort()
    m = masks[order]
    idx = torch.arange(1, len(m) + 1, device=m.device, dtype=torch.int32).view(-1, 1, 1)
    owner = (m.to(torch.int32) * idx).amax(0).long()  # 0 = uncovered, else 1 + position in `order`
    covered = owner > 0
    pick = order[owner[covered] - 1]
    lab = labels[pick]
    sem[covered] = lab.to(torch.uint8)
    conf[covered] = torch.where(lab == IGNORE_ID, torch.zeros_like(scores[pick]), scores[pick]).float()
    if alt is not None:  # a painted pixel takes its mask's runner-ups (none for masks without)
        alt[:, covered] = IGNORE_ID
        alt_conf[:, covered] = 0
        if runner_ups is not None:
            ids, rc = runner_ups[0][keep][pick], runner_ups[1][keep][pick]  # (covered pixels, R)
            named = (lab != IGNORE_ID)[:, None]
            k = min(alt.shape[0], ids.shape[1])
            alt[:k, covered] = torch.where(named, ids, IGNORE_ID)[:, :k].T.to(torch.uint8)
            alt_conf[:k, covered] = torch.where(named, rc, 0.0)[:, :k].T.float()
    return sem, conf, alt, alt_conf
