"""Tiny randomly initialised SAM / CLIP / OWL models of the real architectures, saved to a folder in the
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

TINY_SAM = SamArch(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
                   image_size=128, patch_size=16, prompt_embed_dim=32, window_size=4, decoder_depth=1,
                   decoder_mlp_dim=64, decoder_num_heads=2)


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
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
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
    cfg = CLIPConfig(text_config=dict(vocab_size=n_vocab, max_position_embeddings=77, eos_token_id=n_vocab - 1,
                                      bos_token_id=n_vocab - 2, pad_token_id=n_vocab - 1, **text),
                     vision_config=vision, projection_dim=projection_dim)
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(folder)
    side = vision["image_size"]
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(folder)
    return folder


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    return save_clip(folder, text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
                     vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 image_size=32, patch_size=8),
                     projection_dim=16, seed=seed)


def save_tiny_owlv2(folder: Path, seed: int = 0) -> Path:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = _save_tokenizer(folder)
    cfg = Owlv2Config(
        text_config=dict(vocab_size=n_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, eos_token_id=n_vocab - 1,
                         bos_token_id=n_vocab - 2, pad_token_id=n_vocab - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32)  # OWL's class head needs projection_dim == hidden_size
    torch.manual_seed(seed)
    Owlv2ForObjectDetection(cfg).save_pretrained(folder)
    Owlv2ImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


NET = dict(grid=TINY_GRID.to_dict(), image_size=[64, 112], depth_bins=16, depth_max=25.0, context_channels=8, voxel_channels=8)


def write_recipe(folder: Path, world: Path, **extra) -> Path:
    r = {"name": "t", "out": str(folder / "run"), "device": "cpu",
         "data": {"dataroot": str(world), "version": "v1.0-synth"}, "network": NET,
         "render": {"rays_per_frame": 256}, "loss": {"pseudo_3d": 1.0},
         "train": {"steps": 4, "warmup_steps": 1, "checkpoint_every": 2},
         "dts": {"start_step": 1, "batch_size": 1}}
    r.update(extra)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(r))
    return folder / "recipe.yaml"




def synth_world(root: Path, scenes: int, frames: int, seed: int) -> Path:
    """A synthetic world at 112x200 on TINY_GRID, written into `root`."""
    from autolabel.synth.writer import SynthConfig, write_dataset

    write_dataset(root, SynthConfig(scenes=scenes, frames_per_scene=frames, seed=seed, image_size=(112, 200)),
                  grid=TINY_GRID, progress=False)
    return root


def run_micro_benchmark(script: str, out: Path, *extra: str):
    """Run ``benchmarks/<script> OUT --micro [EXTRA]`` in a subprocess; fails the test with its stderr."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / script), str(out), "--micro", *extra],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def error_line(capsys, command: str) -> str:
    """The one error line a CLI command printed (progress bars may precede it on stderr; a traceback may not)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"autolabel {command}: error: "), err
    return lines[0]
