"""2D supervision: naming / painting logic, every provider end to end, the Zarr cache, eval-2d, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autolabel.cli import main
from autolabel.data.nuscenes import NuScenesFrames
from autolabel.data.transforms import ResizeCrop
from autolabel.errors import DataError
from autolabel.supervision.config import ClipConfig, DetectorConfig, SamConfig, SupervisionConfig
from autolabel.supervision.naming import Vocabulary, class_probabilities, name_masks, paint, runner_up_names
from autolabel.supervision.providers import LidarsegLabels, PrecomputedLabels, build_provider
from occnet.classes import class_id
from occnet.fractions import to_fraction
from tiny_models import TINY_GRID

LABEL_HW = (64, 176)


# ---- naming and painting on hand-made inputs -------------------------------------------------------
def test_class_probability_is_a_softmax_over_log_sum_exp_of_each_class_prompts():
    vocab = Vocabulary.from_mapping({"car": ["car", "sedan"], "driveable_surface": ["road"], "ignore": ["sky"]})
    assert vocab.slot_ids == (class_id("car"), class_id("driveable_surface"), 255)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = class_probabilities(logits, vocab)
    car = math.log(math.exp(2) + math.exp(1))
    expected = torch.tensor([car, 0.0, -1.0]).softmax(0)
    torch.testing.assert_close(p[0], expected)
    # a synonym that matches badly does not lower its class's probability (log-sum-exp >= max)
    vocab2 = Vocabulary.from_mapping({"car": ["car", "sedan", "bad"], "driveable_surface": ["road"], "ignore": ["sky"]})
    p2 = class_probabilities(torch.tensor([[2.0, 1.0, -9.0, 0.0, -1.0]]), vocab2)
    assert p2[0, 0] >= p[0, 0]


def test_names_and_confidence_from_the_margin_and_mask_quality():
    vocab = Vocabulary.from_mapping({"car": ["car"], "truck": ["truck"], "ignore": ["sky"]})
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.4, 0.5, 0.1]])
    labels, conf = name_masks(probs, torch.tensor([1.0, 0.5, 0.9]), vocab)
    assert labels.tolist() == [class_id("car"), 255, class_id("truck")]
    torch.testing.assert_close(conf, torch.tensor([0.5, 0.35, 0.09]))


def test_paint_higher_score_wins_overlaps_and_low_scores_are_dropped():
    m = torch.zeros(3, 4, 4, dtype=torch.bool)
    m[0, :2] = True  # rows 0-1
    m[1, 1:3] = True  # rows 1-2, overlaps row 1, higher score
    m[2, 3] = True  # row 3, below the threshold
    sem, conf, _, _ = paint(m, torch.tensor([4, 11, 13]), torch.tensor([0.5, 0.8, 0.1]), min_score=0.2)
    assert sem[0].tolist() == [4] * 4 and sem[1].tolist() == [11] * 4 and sem[2].tolist() == [11] * 4
    assert sem[3].tolist() == [255] * 4 and conf[3].tolist() == [0.0] * 4
    torch.testing.assert_close(conf[:, 0], torch.tensor([0.5, 0.8, 0.8, 0.0]))
    # an ignore mask (sky) on top erases the label under it and has confidence 0
    sky = torch.zeros(1, 4, 4, dtype=torch.bool)
    sky[0, 0] = True
    sem2, conf2, _, _ = paint(sky, torch.tensor([255]), torch.tensor([0.9]), 0.2, base=(sem, conf, None, None))
    assert sem2[0].tolist() == [255] * 4 and conf2[0].tolist() == [0.0] * 4 and sem2[1].tolist() == [11] * 4


def test_runner_up_names_are_the_next_classes_by_probability_and_paint_with_their_mask():
    """A mask's runner-ups are its classes ranked 2, 3 by p, on the name's confidence scale (p x margin / p1 x
    quality: never above the name's); the ignore slot and missing ranks are none; paint gives each pixel its
    owner's runner-ups and clears them where a mask without any (a detector's) or an ignore mask is painted over."""
    vocab = Vocabulary.from_mapping({"car": ["car"], "truck": ["truck"], "bus": ["bus"], "ignore": ["sky"]})
    probs = torch.tensor([[0.6, 0.3, 0.04, 0.06], [0.2, 0.5, 0.25, 0.05]])
    quality = torch.tensor([1.0, 0.5])
    ids, conf = runner_up_names(probs, quality, vocab, 3)
    car, truck, bus = class_id("car"), class_id("truck"), class_id("bus")
    assert ids.tolist() == [[truck, 255, bus], [bus, car, 255]]
    # margins 0.3 and 0.25, p1 0.6 and 0.5: scales 0.5 and 0.25 (quality 0.5)
    torch.testing.assert_close(conf, torch.tensor([[0.15, 0.0, 0.02], [0.0625, 0.05, 0.0]]))
    names, name_conf = name_masks(probs, quality, vocab)
    assert (conf <= name_conf[:, None]).all()
    one = Vocabulary.from_mapping({"car": ["car"]})
    assert runner_up_names(torch.ones(2, 1), torch.ones(2), one, 2)[0].tolist() == [[255, 255]] * 2
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    m[0, :2], m[1, 2:] = True, True
    labels, scores = torch.tensor([car, truck]), torch.tensor([0.3, 0.25])
    sem, c, alt, alt_conf = paint(m, labels, scores, 0.2, runner_ups=(ids, conf))
    assert alt.shape == (3, 4, 4) and alt.dtype == torch.uint8
    assert alt[:, 0, 0].tolist() == [truck, 255, bus] and alt[:, 3, 3].tolist() == [bus, car, 255]
    torch.testing.assert_close(alt_conf[:, 3, 3], torch.tensor([0.0625, 0.05, 0.0]))
    det = torch.zeros(1, 4, 4, dtype=torch.bool)
    det[0, 0, :2] = True  # a detector's mask over the car's first row: its pixels have no runner-up
    sem2, _, alt2, conf2 = paint(det, torch.tensor([bus]), torch.tensor([0.9]), 0.2, base=(sem, c, alt, alt_conf))
    assert sem2[0, 0] == bus and (alt2[:, 0, :2] == 255).all() and (conf2[:, 0, :2] == 0).all()
    assert alt2[:, 0, 2].tolist() == [truck, 255, bus] and alt2[:, 1, 0].tolist() == [truck, 255, bus]
    assert paint(m, labels, scores, 0.2)[2] is None


def test_vocabulary_naming_an_unknown_class_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown class 'lamp'"):
        SupervisionConfig(vocabulary={"lamp": ["street lamp"]})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"dataroot": "."}, "supervision": {"vocabulary": {"lamp": ["x"]}}}))
    from autolabel.recipe import load_recipe

    with pytest.raises(DataError, match="supervision: vocabulary names an unknown class 'lamp'"):
        load_recipe(recipe)
    recipe.write_text(yaml.safe_dump({"data": {"dataroot": "."}, "supervision": {"sam": {"model_typ": "vit_b"}}}))
    with pytest.raises(
        DataError, match="unknown key supervision.sam.model_typ; allowed keys under supervision.sam: checkpoint"
    ):
        load_recipe(recipe)


# ---- SAM at the label resolution ----------------------------------------------------------------------
def test_sam_masks_at_label_resolution_match_sams_own_postprocessing(tiny_models, sample_frame):
    from segment_anything.utils.transforms import ResizeLongestSide
    from tiny_models import TINY_SAM

    from autolabel.supervision.sam import SamMasks, build_sam

    sam = build_sam(TINY_SAM, tiny_models["sam"])
    runner = SamMasks(sam, SamConfig(arch=TINY_SAM), torch.device("cpu"), bf16=False)
    image = sample_frame.cameras[1].image
    hw = image.shape[:2]
    rc = ResizeCrop.fit(hw, LABEL_HW)
    emb = runner.embed(image[None])
    points = torch.tensor([[300.0, 200.0], [700.0, 400.0]])
    low, _ = runner._decode(emb, points, None, multimask=True)
    ours = torch.nn.functional.grid_sample(
        low[:, None],
        runner._label_grid(hw, rc).expand(len(low), -1, -1, -1),
        align_corners=False,
        padding_mode="border",
    )[:, 0]
    # SAM's path: upsample to the padded input, crop, resize to the camera image; then our ResizeCrop
    input_hw = ResizeLongestSide(TINY_SAM.image_size).get_preprocess_shape(*hw, TINY_SAM.image_size)
    assert tuple(input_hw) == runner.input_hw(hw)
    full = sam.postprocess_masks(low[:, None], input_hw, hw)[:, 0]
    theirs = np.stack([rc.apply_image(m.numpy().astype(np.float32)) for m in full])
    agree = ((ours.numpy() > 0) == (theirs > 0)).mean()
    assert agree > 0.98, agree  # bilinear-of-bilinear vs one bilinear lookup differ only along mask edges


# ---- providers end to end on the real nuScenes sample -----------------------------------------------
def _model_cfg(tiny_models, provider: str) -> SupervisionConfig:
    from tiny_models import TINY_SAM

    return SupervisionConfig(
        provider=provider,
        device="cpu",
        min_confidence=0.0,
        sam=SamConfig(
            checkpoint=tiny_models["sam"],
            arch=TINY_SAM,
            points_per_side=8,
            pred_iou_thresh=0.0,
            stability_score_thresh=0.0,
            min_mask_area=4,
        ),
        clip=ClipConfig(model=tiny_models["clip"]),
        detector=DetectorConfig(model=tiny_models["owl"], box_threshold=0.0),
    )


def _check_maps(sem: np.ndarray, conf: np.ndarray) -> None:
    assert sem.shape == (6, *LABEL_HW) and sem.dtype == np.uint8
    assert conf.shape == sem.shape and conf.dtype == np.float32
    assert set(np.unique(sem).tolist()) <= set(range(17)) | {255}
    assert np.all((conf >= 0) & (conf <= 1)) and np.all(conf[sem == 255] == 0)


@pytest.mark.parametrize("provider", ["sam_clip", "grounded_sam"])
def test_model_providers_run_end_to_end_on_the_real_sample(tiny_models, sample_frame, provider):
    p = build_provider(_model_cfg(tiny_models, provider), ".")
    sem, conf, alt, alt_conf = p.label(sample_frame, ResizeCrop.fit(sample_frame.cameras[0].image_size, LABEL_HW))
    _check_maps(sem, conf)
    # random weights still give masks (thresholds at 0); some are named "sky" (255), the rest get classes
    assert (sem != 255).mean() > 0.1
    # the naming's runner-ups ride along: other classes than the name, none where the name is none
    assert alt.shape == alt_conf.shape == (6, 2, *LABEL_HW) and (alt != 255).any()
    assert (alt.transpose(1, 0, 2, 3)[:, sem == 255] == 255).all() and not ((alt == sem[:, None]) & (alt != 255)).any()


def test_grounded_sam_paints_detected_objects_over_stuff(tiny_models, sample_frame):
    p = build_provider(_model_cfg(tiny_models, "grounded_sam"), ".")
    dets = p.detector.detect(np.stack([c.image for c in sample_frame.cameras]))
    assert all(len(d.boxes) > 0 for d in dets)  # box_threshold 0 keeps boxes (up to max_boxes after NMS)
    detected = {class_id(c) for c in p.cfg.detector.classes}
    assert all(set(d.labels.tolist()) <= detected for d in dets)
    sem, _ = p.label(sample_frame, ResizeCrop.fit(sample_frame.cameras[0].image_size, LABEL_HW))[:2]
    assert set(np.unique(sem).tolist()) & detected  # detections with SAM masks reach the label map


def test_missing_or_wrong_checkpoints_give_clear_errors(tiny_models, tmp_path):
    cfg = _model_cfg(tiny_models, "sam_clip")
    cfg.sam.checkpoint = str(tmp_path / "nope.pth")
    with pytest.raises(DataError, match="nope.pth not found; download the SAM checkpoint"):
        build_provider(cfg, ".")
    cfg = _model_cfg(tiny_models, "sam_clip")
    cfg.sam.arch = None  # the vit_h preset does not fit the tiny checkpoint
    with pytest.raises(DataError, match="does not hold a SAM of this architecture"):
        build_provider(cfg, ".")
    cfg = _model_cfg(tiny_models, "sam_clip")
    cfg.clip.model = str(tmp_path)
    with pytest.raises(DataError, match="is not a transformers model folder"):
        build_provider(cfg, ".")
    cfg = _model_cfg(tiny_models, "grounded_sam")
    cfg.detector.model = tiny_models["clip"]
    with pytest.raises(DataError, match="holds a 'clip' model"):
        build_provider(cfg, ".")
    cfg = _model_cfg(tiny_models, "sam_clip")
    cfg.sam.checkpoint = None
    with pytest.raises(DataError, match="sam.checkpoint is not set"):
        build_provider(cfg, ".")


def test_an_image_of_the_wrong_size_is_an_error(tiny_models, sample_frame):
    from dataclasses import replace

    p = build_provider(_model_cfg(tiny_models, "sam_clip"), ".")
    cams = list(sample_frame.cameras)
    cams[2] = replace(cams[2], image=cams[2].image[:400])
    bad = replace(sample_frame, cameras=tuple(cams))
    with pytest.raises(DataError, match=f"sample {sample_frame.token} CAM_FRONT_RIGHT: image is 1600x400"):
        p.label(bad, ResizeCrop.fit((900, 1600), LABEL_HW))


def _add_lidarseg(root: Path, frames: NuScenesFrames) -> np.ndarray:
    """Give the sample's lidar points lidarseg labels (ego frame, origin on the ground: below 0.3 m = driveable,
    above = car in front, manmade behind)."""
    version = root / "v1.0-mini"
    cats = json.loads((version / "category.json").read_text())
    names = ["noise", "flat.driveable_surface", "vehicle.car", "static.manmade"]
    for k, name in enumerate(names):
        if not any(c["name"] == name for c in cats):
            cats.append({"token": f"cat{k:028d}", "name": name, "description": ""})
    for k, c in enumerate(cats):
        c["index"] = k
    (version / "category.json").write_text(json.dumps(cats))
    index = {c["name"]: c["index"] for c in cats}
    frame = frames[0]
    z = frame.lidar.points[:, 2]
    x = frame.lidar.points[:, 0]
    raw = np.where(
        z < 0.3, index["flat.driveable_surface"], np.where(x > 0, index["vehicle.car"], index["static.manmade"])
    )
    raw[:10] = index["noise"]
    sd = frame.lidar.token
    (root / "lidarseg" / "v1.0-mini").mkdir(parents=True)
    raw.astype(np.uint8).tofile(root / "lidarseg" / "v1.0-mini" / f"{sd}_lidarseg.bin")
    (version / "lidarseg.json").write_text(
        json.dumps([{"token": sd, "sample_data_token": sd, "filename": f"lidarseg/v1.0-mini/{sd}_lidarseg.bin"}])
    )
    return raw


def test_lidarseg_labels_land_on_the_projected_points(sample_copy):
    frames = NuScenesFrames(sample_copy, load_images=False)
    with pytest.raises(DataError, match="no nuScenes-lidarseg labels"):
        LidarsegLabels(frames.nusc)
    _add_lidarseg(sample_copy, frames)
    frames = NuScenesFrames(sample_copy, load_images=False)
    provider = LidarsegLabels(frames.nusc)
    frame = frames[0]
    labels = provider.point_labels(frame)
    assert labels[:10].tolist() == [255] * 10
    assert set(np.unique(labels).tolist()) == {255, class_id("driveable_surface"), class_id("car"), class_id("manmade")}
    rc = ResizeCrop.fit(frame.cameras[0].image_size, LABEL_HW)
    sem, conf = provider.label(frame, rc)[:2]
    _check_maps(sem, conf)
    # pixels with a label are exactly the pixels with a lidar depth (nearest point per pixel), less noise points
    from autolabel.supervision.lidar_depth import lidar_depth_maps

    depth = lidar_depth_maps(rc.apply_frame(frame))
    assert np.all(depth[sem != 255] > 0)
    assert (sem != 255).sum() >= 0.95 * (depth > 0).sum()
    # the front camera sees x > 0 points above the ground: cars, never manmade
    front = sem[1]
    assert (front == class_id("car")).sum() > 0 and (front == class_id("manmade")).sum() == 0


def test_precomputed_maps_png_and_npz_and_their_errors(tiny_world, tmp_path):
    frames = NuScenesFrames(tiny_world, "v1.0-synth", load_images=False, grid=TINY_GRID)
    frame = frames[0]
    rc = ResizeCrop.fit(frame.cameras[0].image_size, (56, 100))
    exact = PrecomputedLabels(tiny_world, variant="exact").label(frame, rc)
    noisy = PrecomputedLabels(tiny_world, variant="noisy").label(frame, rc)
    assert exact[0].shape == (6, 56, 100) and not np.array_equal(exact[0], noisy[0])
    assert np.all(exact[1][exact[0] != 255] == 1)
    # the same maps as PNG files in another folder give the same labels
    from PIL import Image

    for cam in frame.cameras:
        with np.load(tiny_world / "labels2d" / frame.scene / frame.token / f"{cam.name}.npz") as z:
            d = tmp_path / "maps" / frame.scene / frame.token
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(z["semantics"]).save(d / f"{cam.name}.png")
    png = PrecomputedLabels(tmp_path, folder="maps").label(frame, rc)
    np.testing.assert_array_equal(png[0], exact[0])
    # wrong size and bad ids
    path = tmp_path / "maps" / frame.scene / frame.token / "CAM_FRONT.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(path)
    with pytest.raises(DataError, match="CAM_FRONT.png: label map is 10x10, the camera image is 200x112"):
        PrecomputedLabels(tmp_path, folder="maps").label(frame, rc)
    Image.fromarray(np.full((112, 200), 40, np.uint8)).save(path)
    with pytest.raises(DataError, match=r"class ids must be 0..16 or 255, found \[40\]"):
        PrecomputedLabels(tmp_path, folder="maps").label(frame, rc)
    path.unlink()
    with pytest.raises(DataError, match=f"sample {frame.token} CAM_FRONT: no label map"):
        PrecomputedLabels(tmp_path, folder="maps").label(frame, rc)


def test_runner_up_names_go_from_the_world_s_maps_into_the_cache_only_when_asked(tiny_world, tmp_path):
    """The synthetic world's noisy maps carry runner-up names: the provider reads them (resized with the map),
    the exact maps have none; a cache keeps them with `runner_ups` R (padded when the maps have fewer) and gives
    None without; runner-ups of the wrong shape are refused naming the file."""
    from autolabel.supervision.cache import SupervisionCache, supervise

    frames = NuScenesFrames(tiny_world, "v1.0-synth", load_images=False, grid=TINY_GRID)
    frame = frames[0]
    rc = ResizeCrop.fit(frame.cameras[0].image_size, (56, 100))
    noisy = PrecomputedLabels(tiny_world, variant="noisy").label(frame, rc)
    assert noisy.runner_ups.shape == noisy.runner_up_confidence.shape == (6, 2, 56, 100)
    assert (noisy.runner_ups.transpose(1, 0, 2, 3)[:, noisy.semantics == 255] == 255).all()
    assert (noisy.runner_ups != 255).any()
    assert PrecomputedLabels(tiny_world, variant="exact").label(frame, rc).runner_ups is None
    caches = {}
    for r in (0, 3):
        path = tmp_path / f"r{r}.zarr"
        supervise(frames, PrecomputedLabels(tiny_world), path, (56, 100), progress=False, workers=0, runner_ups=r)
        caches[r] = SupervisionCache.open(path)
    assert caches[0].read_runner_ups(frame.token) is None
    with pytest.raises(DataError, match="r0.zarr: made without runner-up names; set supervision.runner_ups: 0"):
        supervise(frames, PrecomputedLabels(tiny_world), tmp_path / "r0.zarr", (56, 100), progress=False, runner_ups=2)
    ids, conf = caches[3].read_runner_ups(frame.token)
    np.testing.assert_array_equal(ids[:, :2], noisy.runner_ups)
    np.testing.assert_allclose(conf[:, :2], noisy.runner_up_confidence, atol=0.5 / 255 + 1e-6)
    assert (ids[:, 2] == 255).all() and (conf[:, 2] == 0).all()
    np.testing.assert_array_equal(caches[3].read(frame.token)[0], caches[0].read(frame.token)[0])
    cam = tiny_world / "labels2d" / frame.scene / frame.token / "CAM_FRONT.npz"
    with np.load(cam) as z:
        entries = dict(z)
    entries["noisy_runner_ups"] = entries["noisy_runner_ups"][:, :10]
    bad = tmp_path / "bad"
    (bad / "labels2d" / frame.scene / frame.token).mkdir(parents=True)
    np.savez(bad / "labels2d" / frame.scene / frame.token / "CAM_FRONT.npz", **entries)
    with pytest.raises(DataError, match="CAM_FRONT.npz: runner-ups must be two uint8 arrays of one shape"):
        PrecomputedLabels(bad).read(frame.scene, frame.token, "CAM_FRONT", frame.cameras[1].image_size)


# ---- the cache, the supervise command and eval-2d ---------------------------------------------------
def _recipe(tmp_path: Path, world: Path, **supervision) -> Path:
    r = {
        "name": "t",
        "out": str(tmp_path / "run"),
        "data": {"dataroot": str(world), "version": "v1.0-synth"},
        "network": {
            "grid": {"range_min": [-12.8, -12.8, -1.0], "range_max": [12.8, 12.8, 2.2], "voxel_size": 0.4},
            "image_size": [64, 112],
        },
        "supervision": {"provider": "precomputed", **supervision},
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


class _Interrupt(Exception):
    pass


def test_supervise_caches_every_frame_once_and_resumes_after_an_interruption(tiny_world, tmp_path, monkeypatch):
    from autolabel.supervision import cache as cache_mod
    from autolabel.supervision.cache import SupervisionCache

    monkeypatch.setenv("AUTOLABEL_SHARD_FRAMES", "1")  # a frame per shard: frame 0 is written before the crash
    recipe = _recipe(tmp_path, tiny_world)
    calls = []
    real = cache_mod.lidar_depth_maps

    def interrupted(frame, *a):
        calls.append(frame.token)
        if len(calls) == 2:
            raise _Interrupt  # dies while computing the second frame
        return real(frame, *a)

    monkeypatch.setattr(cache_mod, "lidar_depth_maps", interrupted)
    with pytest.raises(_Interrupt):
        main(["supervise", str(recipe)])
    cache = SupervisionCache.open(tmp_path / "run" / "supervision.zarr")
    assert cache.arrays.done().tolist() == [True, False]
    monkeypatch.setattr(cache_mod, "lidar_depth_maps", real)
    assert main(["supervise", str(recipe)]) == 0
    cache = SupervisionCache.open(tmp_path / "run" / "supervision.zarr")
    assert cache.arrays.done().all()
    # equal to an uninterrupted run
    assert main(["supervise", str(_recipe(tmp_path / "b", tiny_world)), "--out", str(tmp_path / "b" / "run")]) == 0
    other = SupervisionCache.open(tmp_path / "b" / "run" / "supervision.zarr")
    for token in cache.arrays.tokens:
        for a, b in zip(cache.read(token), other.read(token)):
            np.testing.assert_array_equal(a, b)
    # what training reads: the same depth and labels FrameDataset computes without the cache
    from autolabel.network_input import FrameDataset

    frames = NuScenesFrames(tiny_world, "v1.0-synth", grid=TINY_GRID)
    direct = FrameDataset(frames, (64, 112), labels="noisy")[1]
    cached = FrameDataset(frames, (64, 112), labels="cache", cache=cache)[1]
    for key in ("depth", "semantics", "intrinsics", "cam2ego"):
        torch.testing.assert_close(cached[key], direct[key])
    # stored as uint8 levels, which the item carries as they are (decoded on the device: occnet.fractions)
    torch.testing.assert_close(to_fraction(cached["confidence"]), direct["confidence"], atol=1 / 255, rtol=0)
    # a cache made at another image size or by another provider is refused, not mixed
    with pytest.raises(DataError, match="computed at"):
        FrameDataset(frames, (32, 56), labels="cache", cache=cache)
    assert main(["supervise", str(_recipe(tmp_path, tiny_world, precomputed={"variant": "exact"}))]) == 2


def test_eval_2d_scores_exact_labels_perfectly_and_noisy_ones_lower(tiny_world, tmp_path, capsys):
    exact = _recipe(tmp_path / "e", tiny_world, precomputed={"variant": "exact"})
    assert main(["supervise", str(exact)]) == 0
    assert main(["eval-2d", str(exact)]) == 0
    scores = json.loads((tmp_path / "e" / "run" / "eval2d" / "scores.json").read_text())
    assert scores["miou"] == pytest.approx(1.0) and scores["coverage_gt"] == pytest.approx(1.0)
    assert (tmp_path / "e" / "run" / "eval2d" / "confusion.png").stat().st_size > 1000
    assert scores["confidence_auroc"] is None  # no wrong pixel: nothing to separate
    noisy = _recipe(tmp_path / "n", tiny_world)
    assert main(["supervise", str(noisy)]) == 0
    assert main(["eval-2d", str(noisy)]) == 0
    s2 = json.loads((tmp_path / "n" / "run" / "eval2d" / "scores.json").read_text())
    assert 0.2 < s2["miou"] < 0.99 and s2["coverage_gt"] < 1.0
    assert 0.55 < s2["confidence_auroc"] < 0.95
    out = capsys.readouterr().out
    assert "mIoU" in out and "confidence AUROC" in out
    # the hard maps of the same world score lower
    hard = _recipe(tmp_path / "h", tiny_world, precomputed={"variant": "hard"})
    assert main(["supervise", str(hard)]) == 0
    assert main(["eval-2d", str(hard)]) == 0
    s3 = json.loads((tmp_path / "h" / "run" / "eval2d" / "scores.json").read_text())
    assert s3["accuracy"] < s2["accuracy"] - 0.03


def test_confidence_auroc_from_the_uint8_histogram():
    """Exact AUROC with ties counting one half: equal to sklearn's on the same pixels."""
    from sklearn.metrics import roc_auc_score

    from autolabel.supervision.eval2d import Scores2D, accumulate_confidence, histogram_auroc

    truth = np.array([[1, 1, 1, 2, 2, 255]], np.uint8)
    pred = np.array([[1, 1, 2, 2, 1, 1]], np.uint8)  # right, right, wrong, right, wrong, (no truth)
    conf = np.array([[0.8, 0.2, 0.2, 0.6, 0.0, 0.9]], np.float32)
    hist = np.zeros((2, 256), np.int64)
    accumulate_confidence(hist, pred, conf, truth)
    # positives 0.8, 0.2, 0.6 against negatives 0.2, 0.0: 5 wins and a tie out of 6 pairs
    assert histogram_auroc(hist) == pytest.approx(5.5 / 6)
    r = np.random.default_rng(0)
    truth = r.integers(0, 3, (50, 60)).astype(np.uint8)
    pred = np.where(r.random((50, 60)) < 0.7, truth, r.integers(0, 3, (50, 60))).astype(np.uint8)
    conf = r.integers(0, 256, (50, 60)).astype(np.uint8)
    conf = np.clip(conf.astype(int) + 40 * (pred == truth), 0, 255).astype(np.uint8)
    hist = np.zeros((2, 256), np.int64)
    accumulate_confidence(hist, pred, conf, truth)
    assert histogram_auroc(hist) == pytest.approx(roc_auc_score((pred == truth).ravel(), conf.ravel()))
    scores = Scores2D(np.zeros((17, 18), np.int64), 1.0, 1.0, 0, hist)
    assert scores.as_dict()["confidence_auroc"] == pytest.approx(histogram_auroc(hist))
    assert "confidence AUROC" in scores.table()


def test_precomputed_variant_is_validated(tiny_world, tmp_path):
    from autolabel.supervision.config import PrecomputedConfig

    assert PrecomputedConfig(variant="hard").variant == "hard"
    with pytest.raises(ValueError, match="precomputed.variant must be one of exact, noisy, hard, v1, got 'harder'"):
        PrecomputedConfig(variant="harder")
    # a world written before noise model v2 has no hard maps: the error says what to do
    frame = NuScenesFrames(tiny_world, "v1.0-synth", load_images=False, grid=TINY_GRID)[0]
    folder = tmp_path / "labels2d" / frame.scene / frame.token
    folder.mkdir(parents=True)
    for cam in frame.cameras:
        with np.load(tiny_world / "labels2d" / frame.scene / frame.token / f"{cam.name}.npz") as z:
            np.savez(folder / f"{cam.name}.npz", semantics=z["semantics"], noisy_semantics=z["noisy_semantics"])
    rc = ResizeCrop.fit(frame.cameras[0].image_size, (56, 100))
    assert PrecomputedLabels(tmp_path, variant="noisy").label(frame, rc)[0].shape == (6, 56, 100)
    with pytest.raises(DataError, match="no 'hard_semantics' map .* run autolabel synth again"):
        PrecomputedLabels(tmp_path, variant="hard").label(frame, rc)


def test_store_disk_full_keeps_finished_frames(tmp_path, monkeypatch):
    import errno

    from autolabel.store.frame_arrays import ArraySpec, FrameArrays, open_root

    root = open_root(tmp_path / "s.zarr", "a")
    arr = FrameArrays.create_or_open(root, "g", [ArraySpec("x", (4,), "uint8")], ["a", "b"], {"k": 1}, ["k"], "store s")
    arr.write(0, x=np.arange(4))
    import zarr.storage._local as local

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local, "_put", full)
    with pytest.raises(DataError, match="disk full while writing frame b; 1 frames are safely stored"):
        arr.write(1, x=np.ones(4))
    monkeypatch.undo()
    again = FrameArrays.open(open_root(tmp_path / "s.zarr", "r"), "g", [], "store s")
    assert again.done().tolist() == [True, False] and again.read(0, "x").tolist() == [0, 1, 2, 3]
    with pytest.raises(DataError, match="was written with k = 1, this run has 2"):
        FrameArrays.create_or_open(
            open_root(tmp_path / "s.zarr", "a"),
            "g",
            [ArraySpec("x", (4,), "uint8")],
            ["a", "b"],
            {"k": 2},
            ["k"],
            "store s",
        )


@pytest.mark.parametrize(
    "path", sorted(Path(__file__).resolve().parents[1].glob("recipes/*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_recipe_is_valid(path):
    from autolabel.recipe import load_recipe

    recipe = load_recipe(path)
    assert recipe.name == path.stem


def test_a_group_left_half_created_by_a_crash_is_made_again(tmp_path):
    from autolabel.store.frame_arrays import ArraySpec, FrameArrays, open_root

    root = open_root(tmp_path / "s.zarr", "a")
    root.create_group("g").create_array("x", shape=(2, 4), dtype="uint8", chunks=(1, 4))  # died before `tokens`
    arr = FrameArrays.create_or_open(root, "g", [ArraySpec("x", (4,), "uint8")], ["a", "b"], {}, [], "store s")
    arr.write(1, x=np.ones(4))
    assert arr.tokens == ("a", "b") and arr.done().tolist() == [False, True]


def test_precomputed_maps_on_the_real_sample(sample_copy):
    """Label maps made elsewhere for the real nuScenes keyframe (PNG ids + PNG confidence) come back resized."""
    from PIL import Image

    frames = NuScenesFrames(sample_copy, load_images=False)
    frame = frames[0]
    folder = sample_copy / "labels2d" / frame.scene / frame.token
    folder.mkdir(parents=True)
    for k, cam in enumerate(frame.cameras):
        h, w = cam.image_size
        sem = np.full((h, w), 255, np.uint8)
        sem[h // 2 :] = 11  # road in the lower half
        sem[: h // 4, : w // 2] = k  # a per-camera id in the upper-left block
        Image.fromarray(sem).save(folder / f"{cam.name}.png")
        Image.fromarray(np.full((h, w), 128, np.uint8)).save(folder / f"{cam.name}_confidence.png")
    rc = ResizeCrop.fit(frame.cameras[0].image_size, LABEL_HW)
    sem, conf = build_provider(SupervisionConfig(provider="precomputed"), sample_copy).label(frame, rc)[:2]
    _check_maps(sem, conf)
    assert np.all(sem[:, -1] == 11) and np.allclose(conf[sem == 11], 128 / 255)
    # the default crop drops the top 35% of the image (sky), so the upper-quarter blocks are gone
    assert set(np.unique(sem).tolist()) == {11, 255}


def test_reading_one_frame_does_not_read_every_done_flag(tiny_world, tmp_path, monkeypatch):
    """Training reads the cache per item: reading all N done flags each time would scale as N^2."""
    from autolabel.store.frame_arrays import FrameArrays
    from autolabel.supervision.cache import SupervisionCache

    assert main(["supervise", str(_recipe(tmp_path, tiny_world))]) == 0
    cache = SupervisionCache.open(tmp_path / "run" / "supervision.zarr")

    def every_flag(self):
        raise AssertionError("read all done flags")

    monkeypatch.setattr(FrameArrays, "done", every_flag)
    sem, conf, depth = cache.read(cache.arrays.tokens[1])
    assert sem.shape == (6, 64, 112) and depth.max() > 0
