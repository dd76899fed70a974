from autolabel.cli import main


def test_info_summarizes_real_sample(sample_root, capsys):
    assert main(["info", str(sample_root)]) == 0
    out = capsys.readouterr().out
    assert "scenes    1" in out and "samples   1" in out
    assert out.count("1600x900 (1)") == 6
    assert "34688 points per keyframe sweep" in out
    assert "gts/      none" in out and "2D maps   none" in out


def test_info_bad_version_is_a_clear_error(sample_root, capsys):
    assert main(["info", str(sample_root), "--version", "v9"]) == 2
    err = capsys.readouterr().err
    assert "no version folder" in err and "v1.0-mini" in err and "Traceback" not in err
