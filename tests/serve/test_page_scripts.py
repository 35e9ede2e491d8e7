"""The web page's subtitle and transcript scripts (serve/static/subtitles.js, transcript.js) run under Node.js.

subtitles.js mirrors livecue.data.subtitles (the writer of `livecue demo --save`'s sidecars): both must give the
golden text of tests/data/subtitles_golden/ byte for byte. The browser test runs the same check in Chromium; this one
needs only ``node`` (skipped where it is not installed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from livecue.data.subtitles import caption_text, cues_from_captions, to_srt, to_vtt

NODE = shutil.which("node") or shutil.which("nodejs")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js (node) to run the page's scripts")
STATIC = Path(__file__).resolve().parents[2] / "src" / "livecue" / "serve" / "static"
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "subtitles_golden"

# loads the two scripts as the page does (classic scripts sharing one global scope), runs `job` on stdin's JSON
RUNNER = """
const fs = require("fs");
const src = ["subtitles.js", "transcript.js"].map((f) => fs.readFileSync(process.argv[1] + "/" + f, "utf8"));
const {S, T} = new Function(src.join("\\n") + "\\nreturn {S: LivecueSubtitles, T: LivecueTranscript};")();
const input = JSON.parse(fs.readFileSync(0, "utf8"));
const jobs = {
  golden: (events) => {
    const cues = S.cuesFromCaptions(events.map((e) => [e.t, S.captionText(e.kind, e.text, e.query)]));
    return {srt: S.toSrt(cues), vtt: S.toVtt(cues)};
  },
  transcript: (events) => ({json: T.json(events, {model: "tiny", session: "s1"}),
                            srt: S.toSrt(T.cues(events)), vtt: S.toVtt(T.cues(events))}),
  bad: (hold) => { try { S.cuesFromCaptions([[0, "a"]], hold); return null; } catch (e) { return e.message; } },
};
process.stdout.write(JSON.stringify(jobs[process.argv[2]](input)));
"""


def run_js(job: str, data: object) -> object:
    done = subprocess.run([NODE, "-e", RUNNER, str(STATIC), job], input=json.dumps(data), capture_output=True,
                          text=True, encoding="utf-8", timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_pages_subtitle_writer_gives_the_golden_text():
    events = json.loads((GOLDEN / "captions.json").read_text(encoding="utf-8"))
    got = run_js("golden", events)
    assert got["srt"] == (GOLDEN / "golden.srt").read_bytes().decode("utf-8")
    assert got["vtt"] == (GOLDEN / "golden.vtt").read_bytes().decode("utf-8")


def test_the_transcript_is_exported_as_the_python_writer_would():
    """Server events (as the page keeps them) -> the same SRT/VTT as livecue.data.subtitles, and JSON that parses."""
    events = [{"type": "reply", "t": 0.5, "text": "A red circle appears.", "latency": 0.1},
              {"type": "answer", "t": 1.25, "query": "What colour?", "text": "Red.", "query_t": 1.25},
              {"type": "reply", "t": 9.0, "text": "It <spins> & stops.", "truncated": True}]
    got = run_js("transcript", events)
    cues = cues_from_captions([(e["t"], caption_text(e["type"], e["text"], e.get("query"))) for e in events])
    assert got["srt"] == to_srt(cues) and got["vtt"] == to_vtt(cues)
    assert "Q: What colour? A: Red." in got["srt"] and "&lt;spins&gt; &amp;" in got["vtt"]
    doc = json.loads(got["json"])
    assert doc["format"] == "livecue-transcript" and doc["version"] == 1 and doc["model"] == "tiny"
    assert doc["events"] == events and got["json"].endswith("\n")


def test_bad_hold_is_named_like_python():
    message = run_js("bad", 0)
    with pytest.raises(ValueError) as e:
        cues_from_captions([(0.0, "a")], hold=0)
    assert message == str(e.value) == "hold must be a finite number of seconds > 0, got 0"
