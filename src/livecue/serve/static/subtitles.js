// Subtitles in the browser: the page's transcript as SubRip (.srt) or WebVTT (.vtt). A mirror of
// livecue/data/subtitles.py (`livecue demo --save` writes its sidecars with that one), line for line: the exact
// format is described there, and both writers are tested against one golden text (tests/data/subtitles_golden/).
"use strict";

const LivecueSubtitles = (() => {
  const DEFAULT_HOLD = 2.5;  // seconds a cue stays at most (as the burned-in captions of `livecue demo --save`)
  const NEWLINE = /\r\n|\r|\n/;
  const EDGE_SPACE = /^[ \t]+|[ \t]+$/g;
  const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g;  // C0 controls but tab (and the line breaks, split at)

  // What a subtitle shows for an event: a narration's text, or "Q: <question> A: <answer>" for an answer.
  function captionText(kind, text, query) {
    return kind === "answer" ? `Q: ${query} A: ${text}` : text;
  }

  // A caption's text as subtitle lines: split at line breaks, control characters removed, spaces/tabs stripped,
  // empty lines dropped.
  function cleanText(text) {
    return String(text).split(NEWLINE).map((line) => line.replace(CONTROL, "").replace(EDGE_SPACE, ""))
      .filter((l) => l).join("\n");
  }

  // Timed cues {start, end, text} for [t, text] captions: each from t for `hold` seconds or until the next later one.
  function cuesFromCaptions(captions, hold = DEFAULT_HOLD) {
    if (!(Number.isFinite(hold) && hold > 0)) throw new Error(`hold must be a finite number of seconds > 0, got ${hold}`);
    const items = [];
    for (const [t, text] of captions) {
      if (!(Number.isFinite(t) && t >= 0)) throw new Error(`a caption time must be a finite number of seconds >= 0, got ${t}`);
      const cleaned = cleanText(text);
      if (cleaned) items.push([Number(t), cleaned]);
    }
    items.sort((a, b) => a[0] - b[0]);  // stable: captions at one time keep their order
    return items.map(([t, text], i) => {
      let end = t + hold;
      const later = items.slice(i + 1).find(([s]) => s > t);
      if (later !== undefined && later[0] < end) end = later[0];
      return {start: t, end, text};
    });
  }

  const millis = (seconds) => Math.max(0, Math.floor(seconds * 1000 + 0.5));
  const pad = (n, width) => String(n).padStart(width, "0");

  function stamp(ms, separator) {
    const hours = Math.floor(ms / 3600000), minutes = Math.floor((ms % 3600000) / 60000);
    const secs = Math.floor((ms % 60000) / 1000);
    return `${pad(hours, 2)}:${pad(minutes, 2)}:${pad(secs, 2)}${separator}${pad(ms % 1000, 3)}`;
  }

  function timing(cue, separator) {
    const start = millis(cue.start);
    const end = Math.max(millis(cue.end), start + 1);
    return `${stamp(start, separator)} --> ${stamp(end, separator)}`;
  }

  function toSrt(cues) {
    const blocks = [];
    for (const cue of cues) {
      const text = cleanText(cue.text).replaceAll("-->", "->");
      if (text) blocks.push(`${blocks.length + 1}\n${timing(cue, ",")}\n${text}\n`);
    }
    return blocks.join("\n");
  }

  function toVtt(cues) {
    const blocks = [];
    for (const cue of cues) {
      const text = cleanText(cue.text).replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
      if (text) blocks.push(`${timing(cue, ".")}\n${text}\n`);
    }
    return ["WEBVTT\n", ...blocks].join("\n");
  }

  return {DEFAULT_HOLD, captionText, cleanText, cuesFromCaptions, toSrt, toVtt};
})();
if (typeof window !== "undefined") window.LivecueSubtitles = LivecueSubtitles;
