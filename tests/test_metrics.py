import numpy as np
import pytest
import torch

from occnet.classes import FREE_ID, IGNORE_ID, NUM_CLASSES, OCC3D_CLASS_NAMES, class_id, colorize
from occnet.metrics import OccupancyMetric


def test_class_table():
    assert len(OCC3D_CLASS_NAMES) == 18 and FREE_ID == 17 and IGNORE_ID == 255
    assert class_id("car") == 4 and class_id("vegetation") == 16
    with pytest.raises(ValueError, match="unknown Occ3D class"):
        class_id("sky")
    assert colorize(np.array([255, 4])).tolist() == [[64, 64, 64], [0, 150, 245]]


def test_hand_computed_confusion():
    car, road, free = 4, 11, FREE_ID
    gt = np.array([car, car, road, road, free, free, IGNORE_ID, car])
    pred = np.array([car, road, road, free, free, car, car, car])
    mask = np.array([1, 1, 1, 1, 1, 1, 1, 0])  # last voxel outside mask_camera
    m = OccupancyMetric()
    m.update(pred, gt, mask)
    cm = m.confusion
    # counted: (car,car) (car,road) (road,road) (road,free) (free,free) (free,car); ignore and masked dropped
    assert cm.sum() == 6
    assert cm[car, car] == 1 and cm[car, road] == 1 and cm[road, road] == 1
    assert cm[road, free] == 1 and cm[free, free] == 1 and cm[free, car] == 1
    s = m.compute()
    # car: TP 1, FN 1 (->road), FP 1 (free->car) => 1/3; road: TP 1, FP 1, FN 1 => 1/3; free: 1/3
    assert s.per_class_iou[car] == pytest.approx(1 / 3)
    assert s.per_class_iou[road] == pytest.approx(1 / 3)
    assert s.per_class_iou[free] == pytest.approx(1 / 3)
    assert np.isnan(s.per_class_iou[0])  # absent class is NaN and skipped
    assert s.miou == pytest.approx(1 / 3)  # mean of car and road only; free not averaged
    # geometric: occupied gt {car,car,road,road}, occupied pred {car,road,road,car(free gt)}
    # TP 3 (car->car, car->road, road->road), FN 1 (road->free), FP 1 (free->car)
    assert s.geometric_iou == pytest.approx(3 / 5)
    d = s.as_dict()
    assert d["miou"] == pytest.approx(33.33) and d["per_class_iou"]["others"] is None
    assert "mIoU" in s.table()


def test_accumulates_over_frames_not_averaged_per_frame():
    m = OccupancyMetric()
    m.update(np.array([4, 4]), np.array([4, 4]))
    m.update(np.array([FREE_ID]), np.array([4]))
    # pooled: TP 2, FN 1 -> 2/3 (a per-frame mean would give 0.5)
    assert m.compute().per_class_iou[4] == pytest.approx(2 / 3)


def _dense_reference(preds, gts, masks):
    iou = np.full(NUM_CLASSES, np.nan)
    valid = [(m > 0) & (g != IGNORE_ID) for g, m in zip(gts, masks)]
    for c in range(NUM_CLASSES):
        tp = sum(((p == c) & (g == c) & v).sum() for p, g, v in zip(preds, gts, valid))
        fp = sum(((p == c) & (g != c) & v).sum() for p, g, v in zip(preds, gts, valid))
        fn = sum(((p != c) & (g == c) & v).sum() for p, g, v in zip(preds, gts, valid))
        if tp + fp + fn:
            iou[c] = tp / (tp + fp + fn)
    occ_tp = sum(((p != FREE_ID) & (g != FREE_ID) & v).sum() for p, g, v in zip(preds, gts, valid))
    occ_fp = sum(((p != FREE_ID) & (g == FREE_ID) & v).sum() for p, g, v in zip(preds, gts, valid))
    occ_fn = sum(((p == FREE_ID) & (g != FREE_ID) & v).sum() for p, g, v in zip(preds, gts, valid))
    return iou, np.nanmean(iou[:17]), occ_tp / (occ_tp + occ_fp + occ_fn)


def test_matches_independent_dense_computation_on_random_volumes():
    rng = np.random.default_rng(0)
    preds, gts, masks = [], [], []
    m = OccupancyMetric()
    for _ in range(4):
        gt = rng.integers(0, NUM_CLASSES, size=(12, 10, 4)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.1] = IGNORE_ID
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, NUM_CLASSES, size=gt.shape)).astype(np.uint8)
        pred[pred == IGNORE_ID] = FREE_ID
        mask = (rng.random(gt.shape) < 0.8).astype(np.uint8)
        preds.append(pred), gts.append(gt), masks.append(mask)
        m.update(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(mask))  # torch inputs too
    iou, miou, geo = _dense_reference(preds, gts, masks)
    s = m.compute()
    np.testing.assert_allclose(s.per_class_iou, iou)
    assert s.miou == pytest.approx(miou) and s.geometric_iou == pytest.approx(geo)


def test_bad_inputs():
    m = OccupancyMetric()
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="prediction ids"):
        m.update(np.array([18]), np.array([0]))
