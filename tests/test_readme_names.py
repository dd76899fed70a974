"""The README's Commands table matches the code: every dotted API name it gives imports, every
`autolabel ...` command and flag it shows exists, and `autolabel --version` prints the version."""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from autolabel.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"
PACKAGES = ("autolabel", "occnet", "kernels")
DOTTED = re.compile(r"^(?:%s)(?:\.[A-Za-z_]\w*)*$" % "|".join(PACKAGES))


def table_cells() -> list[str]:
    """The cells of the README's `## Commands` table (header row left out)."""
    lines = README.read_text().splitlines()
    rows = []
    for line in lines[lines.index("## Commands") + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append(line)
    assert len(rows) > 5, "README: the Commands table was not found"
    # a cell boundary is a '|' not escaped as '\|' (the table writes alternatives as `a\|b`)
    return [c.strip() for row in rows[1:] for c in re.split(r"(?<!\\)\|", row.strip("|"))]


def api_names() -> list[str]:
    """Backticked dotted names (`autolabel.data.NuScenesFrames`), with `module` (`A`, `B`) read as
    module.A and module.B."""
    names = []
    for cell in table_cells():
        for m in re.finditer(r"`([^`]+)`(\s*\(([^)]*)\))?", cell):
            if not DOTTED.match(m.group(1)):
                continue
            members = re.findall(r"`([A-Za-z_]\w*)`", m.group(3) or "")
            names += [f"{m.group(1)}.{a}" for a in members] or [m.group(1)]
    return names


def commands() -> list[str]:
    return [span.replace("\\|", "|") for cell in table_cells() for span in re.findall(r"`(autolabel [^`]+)`", cell)]


def resolve(name: str):
    """Import `name` as a module, else as an attribute of its parent package / module."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
    parent, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(parent), attr)


def test_readme_lists_the_names_it_should():
    names = api_names()
    for expected in (
        "autolabel.data.NuScenesFrames",
        "occnet.OccupancyNetwork",
        "occnet.Trainer",
        "occnet.predict",
        "autolabel.network_input.FrameDataset",
        "kernels.render_rays",
        "occnet.metrics.OccupancyMetric",
    ):
        assert expected in names  # the parser reads the table as intended


@pytest.mark.parametrize("name", api_names())
def test_readme_api_name_imports(name):
    try:
        resolve(name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"README.md Commands table names `{name}`, which does not import: {exc}")


def test_readme_commands_and_flags_exist():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    top = {s for a in parser._actions for s in a.option_strings}
    shown = commands()
    assert len(shown) >= 10
    for text in shown:
        word = text.split()[1]
        if word.startswith("--"):
            assert word in top, f"README: `{text}`: autolabel has no option {word}"
            continue
        assert word in sub, f"README: `{text}`: no sub-command {word!r} (have {sorted(sub)})"
        options = {s for a in sub[word]._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", text):
            assert flag in options, f"README: `{text}`: `autolabel {word}` has no option {flag}"


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"autolabel {version('occ-autolabel')}\n"


def test_imports_flow_kernels_occnet_autolabel():
    """kernels imports neither occnet nor autolabel, occnet never imports autolabel (fresh interpreter). And
    the command line's import leaves the nuScenes devkit out until a dataset or a box needs it: importing any
    devkit module loads matplotlib and scikit-learn, 2.6 s of every process of the tool (and of the test
    suite's subprocesses) on the 2-core CPU."""
    code = (
        "import sys\n"
        "def loaded(p): return sorted(m for m in sys.modules if m.split('.')[0] == p)\n"
        "import kernels\nassert not loaded('occnet') and not loaded('autolabel'), loaded('occnet') + "
        "loaded('autolabel')\n"
        "import occnet\nassert not loaded('autolabel'), loaded('autolabel')\n"
        "import autolabel.network_input, autolabel.training, autolabel.data\n"
        "import autolabel.cli\nassert not loaded('nuscenes'), loaded('nuscenes')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_nuscenes_walkthrough_names_are_true():
    """Issue 23: "Labelling your nuScenes copy": every command and flag it shows exists, every recipe it
    names exists with the paths, keys and backbone files it says."""
    from autolabel.stages.checks import BACKBONE_DOWNLOADS
    from autolabel.recipe import load_recipe

    text = section("Labelling your nuScenes copy")
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    shown = re.findall(r"`(autolabel [^`]+)`", text) + re.findall(r"^\s*(autolabel [^\n]+)$", text, re.M)
    assert len(shown) >= 6
    for cmd in shown:
        word = cmd.split()[1]
        if word == "...":
            continue
        assert word in sub, f"README: `{cmd}`: no sub-command {word!r}"
        options = {s for a in sub[word]._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", cmd):
            assert flag in options, f"README: `{cmd}`: `autolabel {word}` has no option {flag}"
    for flag in re.findall(r"`(--[a-z][\w-]*)", text):  # flags named alone: of run, export or eval
        assert any(flag in {s for a in sub[c]._actions for s in a.option_strings} for c in ("run", "export", "eval"))
    root = README.parent
    for name in ("nuscenes_label_free", "nuscenes_active_rounds"):
        assert f"recipes/{name}.yaml" in text
        r = load_recipe(root / "recipes" / f"{name}.yaml")
        assert f"`{r.data.dataroot}/`" in text and f"`{r.supervision.sam.checkpoint}`" in text
        assert f"`{r.supervision.clip.model}/`" in text
    assert "runs/nuscenes_active_rounds/round_<K>/select/" in text
    rounds = load_recipe(root / "recipes" / "nuscenes_active_rounds.yaml").rounds
    assert rounds.annotations_dir == "annotations" and "`annotations/round_<K>/gts/<scene>/<token>/labels.npz`" in text
    for key in re.findall(r"`((?:network|data|rounds)\.\w+)", text):
        section_name, field = key.split(".")
        assert hasattr(getattr(r, section_name), field), key
    for backbone, url in BACKBONE_DOWNLOADS.items():
        if backbone != "resnet34":
            assert url.rsplit("/", 1)[1] in text, backbone
