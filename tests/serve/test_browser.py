"""The live web page in a real browser: headless Chromium streams a fake webcam to `livecue serve --model tiny`.

Chromium's fake capture device plays a .y4m file made here from a sample video (bikes.mp4; synthetic frames when
the samples are not installed). The test drives the browser through chromedriver's WebDriver HTTP protocol (plain
JSON over urllib, no selenium), presses Start, and reads the events from the page's DOM: replies, an answer to a
typed question, a θ change that makes the model silent, and the session's close. A second test streams a local
video file (VP8 WebM) chosen in the page's file input; a third lets such a file end while the server is paused
(SIGSTOP): the page shows how far the model is behind, closes the session when the file ends, the pending question
is answered, the status reads "ended" (no error), and the transcript downloads as JSON, .srt and .vtt.

Needs the Debian packages ``chromium`` and ``chromium-driver``; skipped only where they are not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
pytest.importorskip("uvicorn", reason="the [serve] extra is not installed")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="headless browser test needs the Debian "
                                "packages chromium and chromium-driver (apt-get install -y chromium chromium-driver)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pictures(n: int, size: tuple[int, int]) -> list:
    """``n`` yuv420p frames: the bikes sample (every third frame), or moving colour bars without it."""
    import av

    from livecue.data.samples import sample_dir

    w, h = size
    sample = sample_dir() / "bikes.mp4" if sample_dir() else None
    if sample is not None and sample.is_file():
        with av.open(str(sample)) as video:
            return [f.reformat(width=w, height=h, format="yuv420p") for i, f in
                    zip(range(3 * n), video.decode(video=0)) if i % 3 == 0]
    x = np.arange(w)[None, :, None]
    return [av.VideoFrame.from_ndarray(((x * 3 + k * 20 + np.array([0, 85, 170])) % 256).astype(np.uint8)
                                       .repeat(h, 0), format="rgb24").reformat(format="yuv420p") for k in range(n)]


def make_video(path: Path, n: int = 30, size: tuple[int, int] = (320, 176)) -> Path:
    """A 10 fps clip: YUV4MPEG2 (.y4m) for Chromium's fake webcam, or VP8 WebM (.webm) for the file input."""
    import av

    webm = path.suffix == ".webm"
    with av.open(str(path), "w", format="webm" if webm else "yuv4mpegpipe") as out:
        stream = out.add_stream("libvpx" if webm else "rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for picture in _pictures(n, size):
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


class WebDriver:
    """The few W3C WebDriver commands this test needs, as JSON over HTTP."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session: str | None = None

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> object:
        data = None if body is None else json.dumps(body).encode()
        prefix = "" if self.session is None or path.startswith("/session") and not path.startswith("/session/") \
            else f"/session/{self.session}"
        req = urllib.request.Request(self.base + prefix + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return json.loads(response.read() or b"null")["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"WebDriver {method} {path}: {e.read().decode(errors='replace')[:500]}") from None

    def start(self, args: list[str], prefs: dict | None = None) -> None:
        options = {"binary": CHROMIUM, "args": args, **({"prefs": prefs} if prefs else {})}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def js(self, script: str, *args: object) -> object:
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script: str, *args: object) -> object:
        """Run ``script``; its result is what it passes to ``done`` (the callback WebDriver appends)."""
        wrapped = f"const done = arguments[arguments.length - 1]; {script}"
        return self.call("POST", "/execute/async", {"script": wrapped, "args": list(args)})

    def element(self, css: str) -> str:
        found = self.call("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(found.values()))

    def click(self, css: str) -> None:
        self.call("POST", f"/element/{self.element(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        self.call("POST", f"/element/{self.element(css)}/value", {"text": text})

    def wait(self, script: str, what: str, timeout: float = 30.0) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(script)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; page log: {self.js(LOG)}")


LOG = "return Array.from(document.querySelectorAll('#log li')).map(li => li.dataset.type + ': ' + li.textContent)"
COUNT = "return Number(document.querySelector('[data-count=\"{}\"]').textContent)"


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture(scope="module")
def served_process(tmp_path_factory):
    """`livecue serve --model tiny` on a free loopback port; yields its URL and its process."""
    tmp_path = tmp_path_factory.mktemp("serve")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "livecue.cli", "serve", "--model", "tiny", "--port", "0",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, f"unexpected first line from livecue serve: {line!r} ({(tmp_path / 'serve.log').read_text()})"
        url = f"http://127.0.0.1:{match.group(1)}"
        wait_http(url + "/health")
        yield url, proc
    finally:
        if hasattr(signal, "SIGCONT"):  # a test that paused it may have failed midway
            proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def served(served_process):
    """The URL of `livecue serve --model tiny`."""
    return served_process[0]


@pytest.fixture
def browser(tmp_path):
    port = free_port()
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wd = WebDriver(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if wd.call("GET", "/status", timeout=2).get("ready"):
                    break
            except (OSError, AssertionError):
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.1)
        video = make_video(tmp_path / "webcam.y4m")
        wd.start(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
                  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                  f"--use-file-for-fake-video-capture={video}"],
                 prefs={"download.default_directory": str(tmp_path / "downloads"),
                        "download.prompt_for_download": False})
        yield wd
    finally:
        if wd.session is not None:
            try:
                wd.call("DELETE", "", timeout=10)
            except (OSError, AssertionError):
                pass
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()


def test_page_streams_the_fake_webcam_and_shows_events(served, browser, tmp_path):
    wd = browser
    wd.call("POST", "/url", {"url": served + "/"})
    wd.wait("return document.getElementById('model').textContent.includes('server up')", "the page to load")
    wd.click("#start")
    wd.wait("return document.getElementById('status').dataset.state === 'streaming'", "streaming to start")
    # the tiny random model at the default θ speaks on every frame: replies stream into the caption and the log
    wd.wait(COUNT.format("reply") + " >= 2", "two replies")
    assert wd.js(COUNT.format("sent")) >= 2
    assert wd.js("return document.querySelectorAll('#track .mark.reply').length") >= 2  # on the timeline
    assert wd.js("return document.getElementById('caption').textContent.length") > 0    # over the video
    assert wd.js("return document.getElementById('video').videoWidth") == 320           # the fake webcam
    # a question typed into the box is answered
    wd.type("#question", "What do you see?")
    wd.click("#ask-button")
    answer = wd.wait("return Array.from(document.querySelectorAll('#log li[data-type=answer]'))"
                     ".map(li => li.textContent)[0]", "an answer")
    assert "Q: What do you see?" in answer
    # θ = 0 from the slider: the model goes silent
    wd.js("const s = document.getElementById('threshold'); s.value = '0'; s.dispatchEvent(new Event('input'))")
    wd.wait(COUNT.format("silence") + " >= 2", "silent frames after θ = 0")
    # Stop closes the session cleanly
    wd.click("#stop")
    wd.wait("return document.querySelector('#log li[data-type=closed]')", "the session to close")
    wd.wait("return document.getElementById('status').dataset.state === 'closed'", "the closed status")
    errors = wd.js("return Array.from(document.querySelectorAll('#log li[data-type=error]')).map(l => l.textContent)")
    assert errors == []
    shot = wd.call("GET", "/screenshot")
    import base64

    (tmp_path / "page.png").write_bytes(base64.b64decode(shot))
    with urllib.request.urlopen(served + "/sessions", timeout=5) as r:
        assert json.loads(r.read())["count"] == 0


def test_page_streams_a_local_video_file(served, browser, tmp_path):
    video = make_video(tmp_path / "clip.webm", n=40)  # 4 s
    wd = browser
    wd.call("POST", "/url", {"url": served + "/?fps=2"})
    wd.click('input[name="source"][value="file"]')
    wd.type("#file", str(video))
    wd.click("#start")
    wd.wait(COUNT.format("reply") + " >= 2", "two replies on the video file")
    times = wd.js("return Array.from(document.querySelectorAll('#log li[data-type=reply]')).map(li => +li.dataset.t)")
    assert all(0 <= t <= 4.5 for t in times)  # stream time = the file's playback time
    assert wd.js("return document.getElementById('video').videoWidth") == 320
    wd.click("#stop")
    wd.wait("return document.querySelector('#log li[data-type=closed]')", "the session to close")


STATUS = "document.getElementById('status')"
SRT_TIMING = re.compile(r"(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})")
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "subtitles_golden"


def downloaded(wd: WebDriver, button: str) -> tuple[str, str]:
    """Press an export button; the file name it downloads and the text behind the page's download link."""
    wd.click(button)
    name = wd.js("return document.getElementById('download').download")
    text = wd.js_async("fetch(document.getElementById('download').href).then((r) => r.text()).then(done)")
    return name, text


def srt_cues(text: str) -> list[tuple[float, float, str]]:
    """A SubRip text parsed strictly: numbered blocks, a timing line each, text lines; (start, end, text)."""
    cues = []
    for i, block in enumerate(text.split("\n\n"), 1):
        lines = block.rstrip("\n").split("\n")
        assert lines[0] == str(i) and len(lines) >= 3 and all(lines[2:]), block
        m = SRT_TIMING.fullmatch(lines[1])
        assert m, lines[1]
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, m.groups())
        # whole milliseconds divided once: the float nearest the written time (8.524, never 8.524000000000001)
        start = (((h1 * 60 + m1) * 60 + s1) * 1000 + ms1) / 1000
        end = (((h2 * 60 + m2) * 60 + s2) * 1000 + ms2) / 1000
        assert end > start
        cues.append((start, end, "\n".join(lines[2:])))
    return cues


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="pauses the server with SIGSTOP (POSIX only)")
def test_a_file_that_ends_closes_the_session_cleanly_and_exports_its_transcript(served_process, browser, tmp_path):
    from livecue.data.subtitles import caption_text, cues_from_captions, to_srt, to_vtt

    url, proc = served_process
    video = make_video(tmp_path / "clip.webm", n=80)  # 8 s
    wd = browser
    wd.call("POST", "/url", {"url": url + "/?fps=2"})
    wd.wait("return document.getElementById('model').textContent.includes('server up')", "the page to load")
    wd.click('input[name="source"][value="file"]')
    wd.type("#file", str(video))
    wd.click("#start")
    wd.wait(COUNT.format("reply") + " >= 1", "a reply on the video file")
    # the model falls behind: the server is paused while the file plays on, and a question is asked
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        wd.click("#prompts .chip")  # an example prompt fills the question box
        assert wd.js("return document.getElementById('question').value") == "What just happened?"
        wd.click("#ask-button")
        wd.wait("return document.getElementById('video').ended", "the file to end", timeout=20)
        # the file ended: no more frames; the page asked the server to finish and waits for the answer
        status = wd.wait(f"return {STATUS}.dataset.state === 'finishing' && {STATUS}.textContent", "finishing")
        assert status == "finishing: answering 1 question"
        behind = wd.wait("const b = document.getElementById('behind'); return !b.hidden && b.textContent",
                         "the behind indicator")
        assert re.fullmatch(r"behind by \d+\.\d s", behind) and float(behind.split()[2]) >= 1.0, behind
        # ... the last frame sent less the latest stream time the server answered for
        lag = wd.js("const s = window.livecue.state; return s.lastT - s.ackT")
        assert abs(float(behind.split()[2]) - lag) <= 0.051, (behind, lag)
        assert wd.js(COUNT.format("answer")) == 0
        sent = wd.js(COUNT.format("sent"))
        time.sleep(1.0)
        assert wd.js(COUNT.format("sent")) == sent  # the page stopped sending
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    wd.wait(f"return {STATUS}.dataset.state === 'ended'", "the ended status", timeout=60)
    assert wd.js(f"return {STATUS}.textContent") == "ended"  # not "streaming", not an error
    answers = wd.js("return Array.from(document.querySelectorAll('#log li[data-type=answer]')).map(l => l.textContent)")
    assert len(answers) == 1 and "Q: What just happened? — A:" in answers[0]  # the pending question was answered
    assert wd.js("return Array.from(document.querySelectorAll('#log li[data-type=error]')).length") == 0
    assert wd.js("return document.querySelector('#log li[data-type=closed]').textContent").count("1 answers") == 1
    assert wd.js("return document.getElementById('behind').hidden")
    assert wd.js("return window.livecue.state.ws") is None  # the server closed the socket (1000), shown as normal
    with urllib.request.urlopen(url + "/sessions", timeout=5) as r:
        assert json.loads(r.read())["count"] == 0

    # the transcript: JSON (the server's events, less their token ids), and subtitles, one cue per reply/answer
    session = wd.js("return window.livecue.state.ready.session")
    name, text = downloaded(wd, "#export-json")
    doc = json.loads(text)
    assert name == f"livecue-{session}.json" and doc["format"] == "livecue-transcript" and doc["session"] == session
    events = doc["events"]
    assert [e["type"] for e in events].count("answer") == 1 and doc["closed"]["reason"] == "closed by the client"
    assert len(events) == wd.js(COUNT.format("reply")) + 1 and all("token_ids" not in e for e in events)
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    captions = [(e["t"], caption_text(e["type"], e["text"], e.get("query"))) for e in events]
    name, srt = downloaded(wd, "#export-srt")
    assert name == f"livecue-{session}.srt"
    cues = srt_cues(srt)
    expected = cues_from_captions(captions)
    assert [(round(c.start, 3), c.text) for c in expected] == [(start, text) for start, _, text in cues]
    assert srt == to_srt(expected)  # the page's writer and livecue demo's agree
    name, vtt = downloaded(wd, "#export-vtt")
    assert name == f"livecue-{session}.vtt" and vtt == to_vtt(expected) and vtt.startswith("WEBVTT\n\n")
    # ... and Chromium saved the three files the buttons offered, with that text
    files = {f"livecue-{session}.{kind}": body for kind, body in (("json", text), ("srt", srt), ("vtt", vtt))}
    folder = tmp_path / "downloads"
    deadline = time.monotonic() + 20
    while not all((folder / f).is_file() for f in files) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {f: (folder / f).read_bytes().decode("utf-8") for f in files if (folder / f).is_file()} == files
    # the page's subtitle writer against the golden text the Python one is tested with
    golden = json.loads((GOLDEN / "captions.json").read_text(encoding="utf-8"))
    got = wd.js("const S = LivecueSubtitles; const cues = S.cuesFromCaptions(arguments[0].map("
                "(e) => [e.t, S.captionText(e.kind, e.text, e.query)])); return [S.toSrt(cues), S.toVtt(cues)]", golden)
    assert got == [(GOLDEN / "golden.srt").read_bytes().decode("utf-8"),
                   (GOLDEN / "golden.vtt").read_bytes().decode("utf-8")]

TOKEN = "b7e1c0ffee5eed42"


@pytest.fixture(scope="module")
def served_with_token(tmp_path_factory):
    """`livecue serve --model tiny --token …` with its access log on; yields (URL, a function returning its logs)."""
    tmp_path = tmp_path_factory.mktemp("serve_token")
    out_path, err_path = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "livecue.cli", "serve", "--model", "tiny", "--port", "0",
                                 "--token", TOKEN, "--log-level", "info"], stdout=out, stderr=err, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while "livecue serve:" not in out_path.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", out_path.read_text())
        assert match, f"livecue serve did not start: {out_path.read_text()!r} {err_path.read_text()[-2000:]}"
        url = f"http://127.0.0.1:{match.group(1)}"
        wait_http(url + "/health")
        yield url, lambda: out_path.read_text() + err_path.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_page_sends_the_token_as_a_subprotocol_and_never_in_a_url(served_with_token, browser):
    """Opened as /?token=…, the page moves the token out of the address bar and sends it as the WebSocket
    subprotocol livecue.token.…; the server's logs never show it."""
    url, logs = served_with_token
    wd = browser
    wd.call("POST", "/url", {"url": f"{url}/?token={TOKEN}&fps=2"})
    wd.wait("return document.getElementById('model').textContent.includes('server up')", "the page to load")
    assert wd.js("return location.search") == "?fps=2"
    wd.click("#start")
    wd.wait(COUNT.format("reply") + " >= 1", "a reply over the authenticated session")
    wd.click("#stop")
    wd.wait("return document.querySelector('#log li[data-type=closed]')", "the session to close")
    text = logs()
    assert '"WebSocket /ws" [accepted]' in text and "GET /?token=***&fps=2 HTTP" in text
    assert TOKEN not in text
