"""Tiny randomly initialised SAM / SAM 2 / SAM 3 / CLIP / OWL / Grounding DINO / Florence-2 models of the real
architectures, saved to a folder in the
same form users download (checkpoint file, transformers model folder) so that tests load them through
the code path users use. Their outputs are real model outputs, only of untrained weights."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

import torch

from autolabel.supervision.config import SamArch
from kernels.grid import GridSpec

TINY_GRID = GridSpec(range_min=(-12.8, -12.8, -1.0), range_max=(12.8, 12.8, 2.2), voxel_size=0.4)  # the tiny world's

TINY_SAM = SamArch(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    image_size=128,
    patch_size=16,
    prompt_embed_dim=32,
    window_size=4,
    decoder_depth=1,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
)


def save_tiny_sam(path: Path, seed: int = 0) -> Path:
    from autolabel.supervision.sam import build_sam

    torch.manual_seed(seed)
    sam = build_sam(TINY_SAM, None)
    torch.save(sam.state_dict(), path)
    return path


def _byte_level_vocab() -> dict[str, int]:
    """CLIP's byte-level BPE vocabulary with no merges: every byte, alone and word-final, plus specials."""
    # GPT-2 style byte -> printable character table: printable bytes stand for themselves, the rest are
    # shifted past 255, in byte order
    printable = (
        set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def _save_tokenizer(folder: Path) -> int:
    from transformers import CLIPTokenizer

    vocab = _byte_level_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    return len(vocab)


def save_clip(folder: Path, text: dict, vision: dict, projection_dim: int, seed: int = 0) -> Path:
    """A randomly initialised CLIP of the given text / vision tower sizes, with a byte-level tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = _save_tokenizer(folder)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=n_vocab,
            max_position_embeddings=77,
            eos_token_id=n_vocab - 1,
            bos_token_id=n_vocab - 2,
            pad_token_id=n_vocab - 1,
            **text,
        ),
        vision_config=vision,
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(folder)
    side = vision["image_size"]
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(folder)
    return folder


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    return save_clip(
        folder,
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vision=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
        seed=seed,
    )


def save_tiny_owlv2(folder: Path, seed: int = 0) -> Path:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = _save_tokenizer(folder)
    cfg = Owlv2Config(
        text_config=dict(
            vocab_size=n_vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            eos_token_id=n_vocab - 1,
            bos_token_id=n_vocab - 2,
            pad_token_id=n_vocab - 1,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
        ),
        projection_dim=32,
    )  # OWL's class head needs projection_dim == hidden_size
    torch.manual_seed(seed)
    Owlv2ForObjectDetection(cfg).save_pretrained(folder)
    Owlv2ImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def sam2_config(tiny: bool = True):
    """SAM 2.1 hiera-large (the released configuration) or a tiny one of the same architecture."""
    from transformers import Sam2Config

    if not tiny:
        return Sam2Config(
            vision_config=dict(
                backbone_config=dict(
                    model_type="sam2_hiera_det_model",
                    hidden_size=144,
                    num_attention_heads=2,
                    blocks_per_stage=[2, 6, 36, 4],
                    embed_dim_per_stage=[144, 288, 576, 1152],
                    num_attention_heads_per_stage=[2, 4, 8, 16],
                    window_size_per_stage=[8, 4, 16, 8],
                    global_attention_blocks=[23, 33, 43],
                    window_positional_embedding_background_size=[7, 7],
                ),
                backbone_channel_list=[1152, 576, 288, 144],
            )
        )
    return Sam2Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam2_hiera_det_model",
                hidden_size=16,
                num_attention_heads=1,
                image_size=[128, 128],
                blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[16, 32, 64, 128],
                num_attention_heads_per_stage=[1, 1, 1, 1],
                window_size_per_stage=[4, 4, 4, 2],
                global_attention_blocks=[3],
                window_positional_embedding_background_size=[4, 4],
            ),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
            fpn_hidden_size=32,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=128, patch_size=16),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )


def save_sam2(folder: Path, tiny: bool = True, seed: int = 0) -> Path:
    from transformers import Sam2ImageProcessor, Sam2Model

    cfg = sam2_config(tiny)
    torch.manual_seed(seed)
    Sam2Model(cfg).save_pretrained(folder)
    side = cfg.prompt_encoder_config.image_size
    Sam2ImageProcessor(size={"height": side, "width": side}).save_pretrained(folder)
    return folder


def sam3_config(n_vocab: int, tiny: bool = True):
    """SAM 3 (the released configuration) or a tiny one of the same architecture, with this text vocabulary."""
    from transformers import Sam3Config

    text = dict(vocab_size=n_vocab, eos_token_id=n_vocab - 1, bos_token_id=n_vocab - 2, pad_token_id=n_vocab - 1)
    if not tiny:
        return Sam3Config(
            text_config=dict(
                vocab_size=max(n_vocab, 49408),
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=24,
                num_attention_heads=16,
                max_position_embeddings=32,
                projection_dim=512,
                eos_token_id=n_vocab - 1,
                bos_token_id=n_vocab - 2,
                pad_token_id=n_vocab - 1,
            )
        )
    h = 32
    return Sam3Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam3_vit_model",
                hidden_size=h,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=112,
                patch_size=14,
                window_size=4,
                global_attn_indexes=[1],
                pretrain_image_size=56,
            ),
            fpn_hidden_size=h,
            backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
        ),
        text_config=dict(
            hidden_size=h,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
            projection_dim=h,
            **text,
        ),
        geometry_encoder_config=dict(hidden_size=h, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=h, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_decoder_config=dict(
            hidden_size=h, num_layers=1, num_attention_heads=2, intermediate_size=64, num_queries=20
        ),
        mask_decoder_config=dict(hidden_size=h, num_attention_heads=2),
    )


def save_sam3(folder: Path, tiny: bool = True, seed: int = 0) -> Path:
    from transformers import Sam3ImageProcessor, Sam3Model

    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = _save_tokenizer(folder)
    cfg = sam3_config(n_vocab, tiny)
    torch.manual_seed(seed)
    Sam3Model(cfg).save_pretrained(folder)
    side = cfg.vision_config.backbone_config.image_size
    mask = 4 * side // cfg.vision_config.backbone_config.patch_size
    Sam3ImageProcessor(size={"height": side, "width": side}, mask_size={"height": mask, "width": mask}).save_pretrained(
        folder
    )
    return folder


def _save_bert_tokenizer(folder: Path) -> int:
    """A WordPiece vocabulary of the default prompts' words, single letters and '.', so every prompt tokenizes."""
    import string

    from transformers import BertTokenizer

    from autolabel.supervision.config import DEFAULT_VOCABULARY

    words = sorted({w.lower() for v in DEFAULT_VOCABULARY.values() for p in v for w in p.split()})
    letters = list(string.ascii_lowercase)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *letters, *[f"##{c}" for c in letters], *words]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(tokens)) + "\n")
    tok = BertTokenizer(str(folder / "vocab.txt"))
    tok.save_pretrained(folder)
    return len(tok)


def grounding_dino_config(n_vocab: int, tiny: bool = True):
    """Grounding DINO base (Swin-B backbone, BERT-base text) or a tiny one of the same architecture."""
    from transformers import GroundingDinoConfig

    if not tiny:
        return GroundingDinoConfig(
            backbone_config=dict(
                model_type="swin",
                embed_dim=128,
                depths=[2, 2, 18, 2],
                num_heads=[4, 8, 16, 32],
                window_size=12,
                image_size=384,
                out_indices=[2, 3, 4],
                out_features=["stage2", "stage3", "stage4"],
            ),
            text_config=dict(model_type="bert", vocab_size=max(n_vocab, 30522)),
        )
    return GroundingDinoConfig(
        backbone_config=dict(
            model_type="swin",
            embed_dim=16,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 2, 2],
            window_size=4,
            image_size=64,
            out_indices=[2, 3, 4],
            out_features=["stage2", "stage3", "stage4"],
        ),
        text_config=dict(
            model_type="bert",
            vocab_size=n_vocab,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=256,
        ),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=20,
        encoder_n_points=2,
        decoder_n_points=2,
    )


def save_grounding_dino(folder: Path, tiny: bool = True, seed: int = 0) -> Path:
    from transformers import GroundingDinoForObjectDetection, GroundingDinoImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = _save_bert_tokenizer(folder)
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(grounding_dino_config(n_vocab, tiny)).save_pretrained(folder)
    size = {"shortest_edge": 64, "longest_edge": 128} if tiny else {"shortest_edge": 800, "longest_edge": 1333}
    GroundingDinoImageProcessor(size=size).save_pretrained(folder)
    return folder


def _save_bart_tokenizer(folder: Path) -> int:
    """BART's byte-level BPE with no merges, plus Florence-2's <loc_0>..<loc_999> tokens."""
    from transformers import BartTokenizer

    chars = [t for t in _byte_level_vocab() if len(t) == 1]
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *chars, "<mask>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = BartTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok.add_tokens([f"<loc_{i}>" for i in range(1000)] + ["<image>"], special_tokens=True)
    tok.save_pretrained(folder)
    return len(tok)


def florence2_config(n_vocab: int, image_token_id: int, tiny: bool = True):
    """Florence-2 large (DaViT + BART-large) or a tiny one of the same architecture."""
    from transformers import Florence2Config

    if not tiny:
        return Florence2Config(
            vision_config=dict(
                embed_dim=[256, 512, 1024, 2048],
                num_heads=[8, 16, 32, 64],
                num_groups=[8, 16, 32, 64],
                depths=[1, 1, 9, 1],
                projection_dim=1024,
            ),
            text_config=dict(
                model_type="bart",
                vocab_size=max(n_vocab, 51289),
                d_model=1024,
                encoder_layers=12,
                decoder_layers=12,
                encoder_attention_heads=16,
                decoder_attention_heads=16,
                encoder_ffn_dim=4096,
                decoder_ffn_dim=4096,
                max_position_embeddings=1024,
            ),
            image_token_id=image_token_id,
        )
    return Florence2Config(
        vision_config=dict(
            depths=[1, 1, 1, 1],
            embed_dim=[16, 32, 32, 32],
            num_heads=[1, 2, 2, 2],
            num_groups=[1, 2, 2, 2],
            window_size=2,
            projection_dim=32,
            drop_path_rate=0.0,
        ),
        text_config=dict(
            model_type="bart",
            vocab_size=n_vocab,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=128,
        ),
        image_token_id=image_token_id,
    )


def save_florence2(folder: Path, tiny: bool = True, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, CLIPImageProcessor, Florence2ForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = _save_bart_tokenizer(folder)
    image_token = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids("<image>")
    torch.manual_seed(seed)
    Florence2ForConditionalGeneration(florence2_config(n_vocab, image_token, tiny)).save_pretrained(folder)
    side = 64 if tiny else 768
    CLIPImageProcessor(
        size={"height": side, "width": side},
        crop_size={"height": side, "width": side},
        do_center_crop=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return folder


NET = dict(
    grid=TINY_GRID.to_dict(), image_size=[64, 112], depth_bins=16, depth_max=25.0, context_channels=8, voxel_channels=8
)


def write_recipe(folder: Path, world: Path, **extra) -> Path:
    r = {
        "name": "t",
        "out": str(folder / "run"),
        "device": "cpu",
        "data": {"dataroot": str(world), "version": "v1.0-synth"},
        "network": NET,
        "render": {"rays_per_frame": 256},
        "loss": {"pseudo_3d": 1.0},
        "train": {"steps": 4, "warmup_steps": 1, "checkpoint_every": 2},
        "dts": {"start_step": 1, "batch_size": 1},
    }
    r.update(extra)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(r))
    return folder / "recipe.yaml"


def synth_world(root: Path, scenes: int, frames: int, seed: int) -> Path:
    """A synthetic world at 112x200 on TINY_GRID, written into `root`."""
    from autolabel.synth.writer import SynthConfig, write_dataset

    write_dataset(
        root,
        SynthConfig(scenes=scenes, frames_per_scene=frames, seed=seed, image_size=(112, 200)),
        grid=TINY_GRID,
        progress=False,
    )
    return root


def run_micro_benchmark(script: str, out: Path, *extra: str):
    """Run ``benchmarks/<script> OUT --micro [EXTRA]`` in a subprocess; fails the test with its stderr."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / script), str(out), "--micro", *extra],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def error_line(capsys, command: str) -> str:
    """The one error line a CLI command printed (progress bars may precede it on stderr; a traceback may not)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"autolabel {command}: error: "), err
    return lines[0]
