"""`livecue demo`: the packaged default model runs offline (needs the [models] extra)."""

import pytest

from livecue import cli


@pytest.mark.realism
def test_demo_runs_with_the_default_model(tmp_path, capsys):
    from livecue import pretrained as offline

    if not offline.available():
        pytest.skip("the [models] extra is not installed (SmolLM2 package missing)")
    pytest.importorskip("efficientnet_lite_pytorch", reason="the [models] extra is not installed")
    rc = cli.main(["demo", "--fast", "--duration", "6", "--seed", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    summary = out.strip().splitlines()[-1]  # the summary line every streaming command prints (commands.display)
    assert summary.startswith("12 frames (") and " s of stream) in " in summary and "narrations" in summary
    assert "[ref" in out  # reference events are printed beside the model's narration


def test_demo_save_directory_must_exist(tmp_path, capsys):
    rc = cli.main(["demo", "--save", str(tmp_path / "nope" / "out.mp4")])
    assert rc == 1 and "--save directory does not exist" in capsys.readouterr().err


def test_default_alias_names_the_packaged_model():
    pytest.importorskip("efficientnet_lite_pytorch", reason="the [models] extra is not installed")
    from livecue.config import LiveConfig
    from livecue.model.load import DEFAULT_MODEL_DIR, load_frame_encoder

    encoder, cfg = load_frame_encoder("default")
    assert cfg == LiveConfig.load(DEFAULT_MODEL_DIR) and cfg.name == "livecue-default"
    assert encoder.num_tokens == cfg.frame_num_tokens
