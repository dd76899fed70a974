"""Issue 22: the providers of the 2D supervision (sam_clip, sam2_clip, sam3, sam_vlm, grounded_sam with OWL or
Grounding DINO) end to end through `autolabel supervise` on the real nuScenes sample with tiny random models
of the real architectures; naming crops from the full-resolution image; SAM 3 / Florence-2 / Grounding DINO
details; configuration and model-folder errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autolabel.cli import main
from autolabel.data.transforms import ResizeCrop
from autolabel.errors import DataError
from autolabel.supervision.config import SupervisionConfig
from occnet.classes import class_id
from tiny_models import TINY_SAM

LABEL_HW = (64, 176)
# a few phrases per class keep the tiny models' runs to seconds (SAM 3 decodes every phrase)
VOCAB = {
    "car": ["car", "sedan"],
    "truck": ["truck"],
    "driveable_surface": ["road"],
    "vegetation": ["tree"],
    "manmade": ["building"],
    "ignore": ["sky"],
}
DETECTED = ["car", "truck"]


def _supervision(tiny_models, provider: str, **over) -> dict:
    sup = {
        "provider": provider,
        "device": "cpu",
        "min_confidence": 0.0,
        "vocabulary": VOCAB,
        "sam": {
            "checkpoint": tiny_models["sam"],
            "arch": {k: (list(v) if isinstance(v, tuple) else v) for k, v in TINY_SAM.__dict__.items()},
            "points_per_side": 4,
            "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0,
            "min_mask_area": 4,
            "max_masks": 6,
        },
        "clip": {"model": tiny_models["clip"]},
        "sam2": {"model": tiny_models["sam2"]},
        "sam3": {"model": tiny_models["sam3"], "score_threshold": 0.0, "max_masks": 6, "prompts_per_batch": 8},
        "vlm": {"model": tiny_models["florence2"]},
        "detector": {"model": tiny_models["owl"], "box_threshold": 0.0, "classes": DETECTED, "max_boxes": 3},
    }
    for k, v in over.items():
        sup[k] = {**sup[k], **v} if isinstance(v, dict) else v
    return sup


def _recipe(tmp_path: Path, sample_root: Path, sup: dict) -> Path:
    r = {
        "name": "t",
        "out": str(tmp_path / "run"),
        "data": {"dataroot": str(sample_root), "version": "v1.0-mini"},
        "network": {"image_size": list(LABEL_HW)},
        "supervision": sup,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


CASES = {
    "sam_clip": {},
    "sam2_clip": {},
    "sam3": {},
    "sam_vlm": {},
    "sam_vlm-sam2": {"vlm": {"masks": "sam2"}},
    "grounded_sam-owl": {},
    "grounded_sam-gdino": {"detector": {"model": "gdino"}},
}


def _spy_on_naming_images(monkeypatch) -> list:
    """Records the shape of every image a namer receives (the calls go through unchanged)."""
    from autolabel.supervision import clip, florence

    seen = []
    real_crops, real_features = clip.mask_crops, florence.FlorenceNamer.image_features

    def crops(image, *a, **k):
        seen.append(tuple(image.shape))
        return real_crops(image, *a, **k)

    def features(self, image):
        seen.append(tuple(image.shape))
        return real_features(self, image)

    monkeypatch.setattr(clip, "mask_crops", crops)
    monkeypatch.setattr(florence.FlorenceNamer, "image_features", features)
    return seen


@pytest.mark.parametrize("case", list(CASES))
def test_every_model_provider_runs_through_autolabel_supervise_on_the_real_sample(
    tiny_models, sample_root, tmp_path, case, capsys, monkeypatch
):
    from autolabel.supervision.cache import SupervisionCache

    over = {k: {kk: (tiny_models[vv] if kk == "model" else vv) for kk, vv in v.items()} for k, v in CASES[case].items()}
    recipe = _recipe(tmp_path, sample_root, _supervision(tiny_models, case.split("-")[0], **over))
    seen = _spy_on_naming_images(monkeypatch)
    assert main(["supervise", str(recipe)]) == 0
    if case != "sam3":  # the namer cuts crops from (CLIP) or reads (Florence-2) the 1600x900 camera image, not
        assert set(seen) == {(3, 900, 1600)}  # the label-resolution one (before issue 22: CLIP crops from 704x256)
    assert f"with provider {case.split('-')[0]}" in capsys.readouterr().out
    cache = SupervisionCache.open(tmp_path / "run" / "supervision.zarr")
    assert cache.arrays.attrs["provider"] == case.split("-")[0]
    sem, conf, depth = cache.read(cache.arrays.tokens[0])
    assert sem.shape == (6, *LABEL_HW) and depth.max() > 0
    allowed = {class_id(c) for c in VOCAB if c != "ignore"} | {255}
    assert set(np.unique(sem).tolist()) <= allowed
    assert (sem != 255).mean() > 0.05  # random weights still name masks (thresholds at 0)
    assert np.all(conf[sem == 255] == 0)


def test_naming_crops_come_from_the_full_resolution_image():
    """A mask's crop is cut from the camera image, not from the label-resolution image: 1-pixel stripes
    survive (a 704-wide resize averages them to grey), and the crop lands where the box maps back."""
    from autolabel.supervision.clip import mask_crops

    H, W = 900, 1600
    rc = ResizeCrop.fit((H, W), (256, 704))
    stripes = torch.zeros(3, H, W)
    stripes[:, :, ::2] = 1.0
    masks = torch.zeros(1, 256, 704, dtype=torch.bool)
    masks[0, 100:110, 300:310] = True
    boxes = torch.tensor([[300.0, 100.0, 309.0, 109.0]])
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    (crop,) = mask_crops(stripes, masks, boxes, rc, 32, 0.0, zero, one, 8)
    inner = crop[0, 0, 4:28, 4:28]
    assert inner.std() > 0.2  # stripes, not the grey of a downsampled image
    # where the crop comes from: an image whose value is the camera x coordinate
    ramp = (torch.arange(W, dtype=torch.float32) + 0.5).expand(3, H, W) / W
    (crop,) = mask_crops(ramp, masks, boxes, rc, 32, 0.0, zero, one, 8)
    inv = np.linalg.inv(rc.matrix)
    x0, x1 = inv[0, 0] * 300 + inv[0, 2], inv[0, 0] * 310 + inv[0, 2]  # the box's camera-pixel extent
    got = crop[0, 0, 16, :].numpy() * W
    expected = x0 + (np.arange(32) + 0.5) * (x1 - x0) / 32
    np.testing.assert_allclose(got[2:-2], expected[2:-2], atol=1.0)


def test_sam3_masks_classes_and_scores_come_straight_from_the_model(tiny_models, sample_frame):
    """Each pixel gets the class of the highest-scoring SAM 3 instance covering it, with that score."""
    from autolabel.supervision.naming import Vocabulary
    from autolabel.supervision.sam3 import Sam3Segmenter

    sup = SupervisionConfig(
        **{k: v for k, v in _supervision(tiny_models, "sam3").items() if k in ("provider", "device", "vocabulary")}
    )
    sup.sam3.model, sup.sam3.score_threshold = tiny_models["sam3"], 0.0
    seg = Sam3Segmenter(sup.sam3, Vocabulary.from_mapping(VOCAB), torch.device("cpu"), bf16=False)
    image = sample_frame.cameras[1].image
    rc = ResizeCrop.fit(image.shape[:2], LABEL_HW)
    vision = seg.embed(image[None])
    masks, labels, scores = seg.segment(vision, 0, image.shape[:2], rc)
    n_queries = seg.model.config.detr_decoder_config.num_queries
    assert len(masks) == n_queries * len(seg.ids)  # threshold 0: every query of every phrase
    assert set(labels.tolist()) == {class_id(c) if c != "ignore" else 255 for c in VOCAB}
    # the score is the model's own: sigmoid(query logit) x sigmoid(presence) of the phrase's forward pass
    out = seg.model(
        pixel_values=torch.nn.functional.interpolate(
            (torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() - seg.mean) / seg.std,
            seg.size,
            mode="bilinear",
            antialias=True,
            align_corners=False,
        ),
        input_ids=seg.ids[:1],
        attention_mask=seg.att[:1],
    )
    expected = out.pred_logits.sigmoid()[0] * out.presence_logits.sigmoid()[0]
    torch.testing.assert_close(scores[:n_queries], expected, atol=2e-3, rtol=0)
    from autolabel.supervision.naming import paint

    sem, conf = paint(masks, labels, scores, 0.0)[:2]
    covered = masks.any(0)
    best = torch.where(masks, scores[:, None, None], torch.full_like(scores[:, None, None], -1)).amax(0)
    torch.testing.assert_close(torch.where(sem == 255, best, conf)[covered], best[covered])


def test_florence_scores_are_the_phrase_log_likelihoods(tiny_models, sample_frame):
    """The batched teacher-forced score equals log p(phrase tokens) + log p(a category ends) computed one
    token at a time through the model's own forward pass."""
    from transformers.modeling_outputs import BaseModelOutput

    from autolabel.supervision.config import VlmConfig
    from autolabel.supervision.florence import FlorenceNamer
    from autolabel.supervision.naming import Vocabulary

    namer = FlorenceNamer(
        VlmConfig(model=tiny_models["florence2"], batch_size=5),
        Vocabulary.from_mapping(VOCAB),
        torch.device("cpu"),
        bf16=False,
    )
    image = torch.from_numpy(sample_frame.cameras[1].image.copy()).permute(2, 0, 1).float() / 255
    rc = ResizeCrop.fit(tuple(image.shape[1:]), LABEL_HW)
    masks = torch.zeros(2, *LABEL_HW, dtype=torch.bool)
    boxes = torch.tensor([[10.0, 5.0, 60.0, 40.0], [100.0, 20.0, 170.0, 60.0]])
    got = namer.prompt_logits(image, masks, boxes, rc)
    assert got.shape == (2, len(namer.vocab.prompts)) and torch.isfinite(got).all()
    # by hand for mask 1, phrase 0 ("car")
    from autolabel.supervision.sam import label_to_camera

    cam = label_to_camera(boxes[1:] + torch.tensor([0, 0, 1, 1]), rc)
    ids, att = namer.questions(cam, tuple(image.shape[1:]))
    feats = namer.image_features(image)
    x = torch.cat([feats, namer.model.get_input_embeddings()(ids)], 1)
    att = torch.cat([torch.ones(1, feats.shape[1], dtype=att.dtype), att], 1)
    enc = BaseModelOutput(
        namer.model.model.language_model.encoder(inputs_embeds=x, attention_mask=att).last_hidden_state
    )
    phrase = namer.tok("car", add_special_tokens=False)["input_ids"]
    seq = [namer.model.config.text_config.decoder_start_token_id, namer.tok.bos_token_id]
    total = 0.0
    for t in [*phrase, None]:
        logp = (
            namer.model(encoder_outputs=enc, attention_mask=att, decoder_input_ids=torch.tensor([seq]))
            .logits[0, -1]
            .log_softmax(-1)
        )
        if t is None:
            total += logp[namer.ends].logsumexp(0).item()
        else:
            total += logp[t].item()
            seq.append(t)
    assert got[1, 0].item() == pytest.approx(total, abs=1e-3)


def test_grounding_dino_scores_phrases_through_their_tokens(tiny_models, sample_frame):
    from autolabel.supervision.config import DetectorConfig
    from autolabel.supervision.detector import GroundingDinoDetector, build_detector
    from autolabel.supervision.naming import Vocabulary

    vocab = Vocabulary.from_mapping({c: VOCAB[c] for c in DETECTED})
    det = build_detector(
        DetectorConfig(model=tiny_models["gdino"], box_threshold=0.0, classes=tuple(DETECTED)),
        vocab,
        torch.device("cpu"),
        bf16=False,
    )
    assert isinstance(det, GroundingDinoDetector)
    # each prompt's row of the positive map spreads 1 over exactly its own tokens
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["gdino"])
    ids = det.tokens["input_ids"][0].tolist()
    for k, p in enumerate(vocab.prompts):
        cols = det.positive[k].nonzero()[:, 0].tolist()
        assert det.positive[k].sum().item() == pytest.approx(1.0)
        assert tok.decode([ids[c] for c in cols]) == p
    images = np.stack([c.image for c in sample_frame.cameras[:2]])
    out = det.detect(images)
    for d in out:
        assert len(d.boxes) <= 100 and set(d.labels.tolist()) <= {class_id(c) for c in DETECTED}
        assert (d.boxes[:, 2] <= 1600).all() and (d.boxes[:, 3] <= 900).all() and (d.boxes[:, :2] >= 0).all()


def test_provider_settings_are_validated_with_clear_errors(tmp_path):
    from autolabel.recipe import load_recipe

    for sup, msg in [
        ({"provider": "sam4"}, "provider must be one of"),
        ({"sam3": {"score_threshold": 2}}, "sam3.score_threshold must lie in"),
        ({"vlm": {"masks": "sam3"}}, "vlm.masks must be one of sam, sam2"),
        ({"sam": {"max_masks": 0}}, "sam.max_masks must be >= 1"),
        ({"sam2": {"model": ""}}, "sam2.model must be the path of a local model folder"),
    ]:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(yaml.safe_dump({"data": {"dataroot": "."}, "supervision": sup}))
        with pytest.raises(DataError, match=msg):
            load_recipe(recipe)


@pytest.mark.parametrize(
    "provider,field,what",
    [
        ("sam2_clip", "sam2.model", "SAM 2 model"),
        ("sam3", "sam3.model", "SAM 3 model"),
        ("sam_vlm", "vlm.model", "Florence-2 model"),
    ],
)
def test_missing_model_folders_say_what_to_download_before_any_work(
    tiny_models, sample_root, tmp_path, capsys, provider, field, what
):
    from tiny_models import error_line

    key = field.split(".")[0]
    sup = _supervision(tiny_models, provider, **{key: {"model": str(tmp_path / "nowhere")}})
    assert main(["supervise", str(_recipe(tmp_path, sample_root, sup))]) == 2
    line = error_line(capsys, "supervise")
    assert f"supervision.{field}: {tmp_path / 'nowhere'} is not a transformers model folder" in line
    assert f"download a {what}" in line
    assert not (tmp_path / "run" / "supervision.zarr").exists()
    # a folder of another architecture is refused by its config.json
    sup = _supervision(tiny_models, provider, **{key: {"model": tiny_models["clip"]}})
    assert main(["supervise", str(_recipe(tmp_path, sample_root, sup))]) == 2
    assert "holds a 'clip' model, not a " + what in error_line(capsys, "supervise")


def _sample_maps(folder: Path, frame, name_by) -> dict:
    """Hand-made label maps of the real sample's cameras (road below the middle, a per-camera class above)."""
    maps = {}
    folder.mkdir(parents=True, exist_ok=True)
    for k, cam in enumerate(frame.cameras):
        h, w = cam.image_size
        sem = np.full((h, w), 255, np.uint8)
        sem[h // 2 :] = class_id("driveable_surface")
        sem[h // 3 : h // 2, : w // 2] = class_id("car") if k % 2 else class_id("manmade")
        maps[cam.name] = sem
        name_by(folder, cam, sem, k)
    return maps


def test_eval_2d_ranks_caches_against_a_folder_of_2d_label_maps(sample_copy, tmp_path, capsys):
    """--truth DIR: maps named by sample_data token (.png) or image file stem (.npy); the precomputed provider
    given the same maps scores 100, a corrupted copy lower; one table holds both; bad maps are one-line errors."""
    from PIL import Image

    from autolabel.data.nuscenes import NuScenesFrames
    from tiny_models import error_line

    frames = NuScenesFrames(sample_copy, load_images=False)
    frame = frames[0]
    stem = {c.token: Path(frames.nusc.get("sample_data", c.token)["filename"]).stem for c in frame.cameras}

    def truth_file(folder, cam, sem, k):
        if k < 3:
            Image.fromarray(sem).save(folder / f"{cam.token}.png")
        else:
            (folder / "sub").mkdir(exist_ok=True)
            np.save(folder / "sub" / f"{stem[cam.token]}.npy", sem.astype(np.int32))

    truth = tmp_path / "truth"
    maps = _sample_maps(truth, frame, truth_file)
    labels = sample_copy / "labels2d" / frame.scene / frame.token
    labels.mkdir(parents=True)
    for name, sem in maps.items():
        Image.fromarray(sem).save(labels / f"{name}.png")
    wrong = sample_copy / "wrong" / frame.scene / frame.token
    wrong.mkdir(parents=True)
    for name, sem in maps.items():
        bad = sem.copy()
        bad[bad == class_id("manmade")] = class_id("vegetation")
        Image.fromarray(bad).save(wrong / f"{name}.png")
    table = tmp_path / "providers.md"
    for name, folder in (("same", "labels2d"), ("other", "wrong")):
        r = {
            "name": name,
            "out": str(tmp_path / name),
            "data": {"dataroot": str(sample_copy), "version": "v1.0-mini"},
            "network": {"image_size": list(LABEL_HW)},
            "supervision": {"provider": "precomputed", "precomputed": {"folder": folder}},
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(r))
        assert main(["supervise", str(tmp_path / f"{name}.yaml")]) == 0
        assert main(["eval-2d", str(tmp_path / f"{name}.yaml"), "--truth", str(truth), "--table", str(table)]) == 0
    import json

    same = json.loads((tmp_path / "same" / "eval2d" / "scores.json").read_text())
    other = json.loads((tmp_path / "other" / "eval2d" / "scores.json").read_text())
    assert same["miou"] == pytest.approx(1.0) and same["coverage_gt"] == pytest.approx(1.0)
    assert other["miou"] < 0.9 and other["iou"]["car"] == pytest.approx(1.0)
    out = capsys.readouterr().out
    assert "truth maps for 6 camera images" in out
    rows = table.read_text().splitlines()
    assert rows[0].startswith("| recipe | provider | truth | mIoU") and len(rows) == 4
    assert rows[2].startswith("| same | precomputed |") and "| 100.0 |" in rows[2] and rows[3].startswith("| other |")
    # bad maps: wrong size, unknown ids, a folder whose names match nothing -- one line naming the file
    cam = frame.cameras[0]
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(truth / f"{cam.token}.png")
    assert main(["eval-2d", str(tmp_path / "same.yaml"), "--truth", str(truth)]) == 2
    assert f"{truth / cam.token}.png: label map is 20x10, the camera image is 1600x900" in error_line(capsys, "eval-2d")
    Image.fromarray(np.full((900, 1600), 17, np.uint8)).save(truth / f"{cam.token}.png")
    assert main(["eval-2d", str(tmp_path / "same.yaml"), "--truth", str(truth)]) == 2
    assert "class ids must be Occ3D 0..16 or 255 (unlabelled), found [17]" in error_line(capsys, "eval-2d")
    other_truth = tmp_path / "misnamed"
    other_truth.mkdir()
    Image.fromarray(maps[cam.name]).save(other_truth / f"{cam.name}.png")
    assert main(["eval-2d", str(tmp_path / "same.yaml"), "--truth", str(other_truth)]) == 2
    assert "no map under" in error_line(capsys, "eval-2d")
    assert main(["eval-2d", str(tmp_path / "same.yaml"), "--truth", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder of 2D label maps" in error_line(capsys, "eval-2d")


def test_providers_speed_benchmark_runs_at_smoke_size(capsys):
    """benchmarks/providers_speed.py --smoke: tiny models on the CPU, every provider and both baselines, one table."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "providers_speed.py"
    spec = importlib.util.spec_from_file_location("providers_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--smoke", "--frames", "1", "--baseline-images", "1"])
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    names = [line.split("|")[1].strip() for line in lines[1:]]
    assert names == [f"{p} (forced 2)" for p in bench.PROVIDERS] + [
        "SamAutomaticMaskGenerator (SAM only)",
        "transformers mask-generation, SAM 2 (SAM only)",
    ]
    for line in lines[1:7]:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        assert cells[1] == "2" and float(cells[6]) > 0 and cells[9].endswith(" h")  # forced count kept, timed
    assert "not a speed figure" in out and out in capsys.readouterr().out
