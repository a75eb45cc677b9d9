from jobs.train import main


def test_bad_override_is_a_clear_error(capsys):
    assert main(["--set", "train.epochz=3"]) == 2
    assert "train.epochz" in capsys.readouterr().err


def test_missing_config_file(capsys, tmp_path):
    assert main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
