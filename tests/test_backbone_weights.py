"""Issue 23: pretrained image backbones. `network.backbone_weights` takes a torchvision ResNet state dict
(R18 / R34 / R50 / R101), loaded into the image encoder; a file that does not fit is refused before work
starts with one line naming the recipe key and the file (exit status 2, no run folder)."""

from __future__ import annotations

import pytest
import torch
import torchvision
import yaml
from tiny_models import error_line, write_recipe

from autolabel.cli import main
from occnet import NetworkConfig, OccupancyNetwork
from occnet.network import backbone_state


def _tiny(**kw) -> NetworkConfig:
    from tiny_models import TINY_GRID

    return NetworkConfig(
        grid=TINY_GRID, image_size=(64, 112), depth_bins=8, depth_max=25.0, context_channels=8, voxel_channels=8, **kw
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(3)
    r18 = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(r18, d / "resnet18.pth")
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), d / "resnet50.pth")
    return {"resnet18": d / "resnet18.pth", "resnet50": d / "resnet50.pth", "state": r18}


def _encoder_as_resnet(model: OccupancyNetwork) -> dict[str, torch.Tensor]:
    """The image encoder's ResNet part under torchvision's key names (stem.0 = conv1, layers.0 = layer1, ...)."""
    rename = {"stem.0.": "conv1.", "stem.1.": "bn1.", **{f"layers.{i}.": f"layer{i + 1}." for i in range(4)}}
    out = {}
    for key, value in model.encoder.state_dict().items():
        for a, b in rename.items():
            if key.startswith(a):
                out[b + key[len(a) :]] = value
    return out


def test_backbone_weights_equal_the_files_after_building(weights):
    model = OccupancyNetwork(_tiny(backbone_weights=str(weights["resnet18"])))
    ours = _encoder_as_resnet(model)
    file = {k: v for k, v in weights["state"].items() if not k.startswith("fc.")}
    assert set(ours) == set(file)  # every parameter and BatchNorm statistic of the ResNet came from the file
    for key, value in file.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)
    fresh = _encoder_as_resnet(OccupancyNetwork(_tiny()))
    assert not torch.equal(fresh["conv1.weight"], file["conv1.weight"])


def test_files_without_classifier_or_step_counters_load(weights, tmp_path):
    """torchvision's own ImageNet files predate BatchNorm's num_batches_tracked; a backbone file may drop fc."""
    state = {
        k: v for k, v in weights["state"].items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    torch.save(state, tmp_path / "old.pth")
    model = OccupancyNetwork(_tiny(backbone_weights=str(tmp_path / "old.pth")))
    torch.testing.assert_close(_encoder_as_resnet(model)["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])


def test_a_resnet50_file_for_a_resnet18_backbone_is_refused_by_name(weights):
    with pytest.raises(ValueError, match=r"not a resnet18 state dict: .*it is a resnet50 state dict"):
        backbone_state("resnet18", str(weights["resnet50"]))
    with pytest.raises(ValueError, match=f"backbone_weights {weights['resnet50']}: not a resnet18 state dict"):
        OccupancyNetwork(_tiny(backbone_weights=str(weights["resnet50"])))
    with pytest.raises(ValueError, match="255 keys missing.*it is a resnet50 state dict"):
        backbone_state("resnet101", str(weights["resnet50"]))  # R101 is a supported backbone too
    backbone_state("resnet50", str(weights["resnet50"]))


def test_networks_built_for_a_checkpoint_do_not_read_the_file(tmp_path):
    """Labelling, evaluation and later rounds load checkpoints: the backbone file may be gone by then."""
    OccupancyNetwork(_tiny(backbone_weights=str(tmp_path / "moved.pth")), pretrained=False)
    with pytest.raises(ValueError, match="moved.pth: no such file"):
        OccupancyNetwork(_tiny(backbone_weights=str(tmp_path / "moved.pth")))


def _recipe(tmp_path, sample_root, backbone_weights: str):
    path = write_recipe(tmp_path, sample_root)
    r = yaml.safe_load(path.read_text())
    r["data"]["version"] = "v1.0-mini"
    r["network"]["backbone_weights"] = backbone_weights
    path.write_text(yaml.safe_dump(r))
    return path


def test_run_refuses_a_mismatched_backbone_file_before_the_run_folder(tmp_path, sample_root, weights, capsys):
    recipe = _recipe(tmp_path, sample_root, str(weights["resnet50"]))
    assert main(["run", str(recipe)]) == 2
    line = error_line(capsys, "run")
    assert f"network.backbone_weights {weights['resnet50']}: not a resnet18 state dict" in line
    assert "it is a resnet50 state dict" in line and not (tmp_path / "run").exists()
    assert main(["train", str(recipe), "--round", "0"]) == 2  # the train command checks it too
    assert "network.backbone_weights" in error_line(capsys, "train") and not (tmp_path / "run").exists()


def test_run_names_the_download_for_a_missing_backbone_file(tmp_path, sample_root, capsys):
    recipe = _recipe(tmp_path, sample_root, "checkpoints/resnet18-f37072fd.pth")
    assert main(["run", str(recipe)]) == 2
    line = error_line(capsys, "run")
    assert "network.backbone_weights checkpoints/resnet18-f37072fd.pth: no such file" in line
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["nuscenes_label_free", "nuscenes_active_rounds"])
def test_the_nuscenes_recipes_say_where_the_backbone_file_goes(name):
    """The commented line is the recipe key as written, and the file name is torchvision's download."""
    from pathlib import Path

    from autolabel.recipe import load_recipe
    from autolabel.stages.checks import BACKBONE_DOWNLOADS

    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml"
    text = path.read_text()
    line = next(s for s in text.splitlines() if s.strip().startswith("# backbone_weights:"))
    value = line.split(":", 1)[1].strip()
    recipe = load_recipe(path, [f"network.backbone_weights={value}"])
    assert Path(recipe.network.backbone_weights).name == BACKBONE_DOWNLOADS[recipe.network.backbone].rsplit("/", 1)[1]
    assert BACKBONE_DOWNLOADS[recipe.network.backbone] in text
