// The page's transcript export: the session's replies and answers (the server's events, less their token ids) as
// JSON, SubRip (.srt) or WebVTT (.vtt), downloaded through a link. The subtitles are written by subtitles.js, the
// mirror of `livecue demo --save`'s writer: a cue per reply/answer from its stream time `t`, "Q: … A: …" for answers.
"use strict";

const LivecueTranscript = (() => {
  // Subtitle cues for the transcript's events.
  function cues(events) {
    const S = LivecueSubtitles;
    return S.cuesFromCaptions(events.filter((e) => Number.isFinite(e.t))
      .map((e) => [e.t, S.captionText(e.type, e.text, e.query)]));
  }

  // The transcript as JSON: `meta` (model, session, fps, θ, source, the `closed` event) and the events.
  function json(events, meta) {
    return `${JSON.stringify({format: "livecue-transcript", version: 1, ...meta, events}, null, 2)}\n`;
  }

  const KINDS = {
    json: {type: "application/json", text: json},
    srt: {type: "application/x-subrip", text: (events) => LivecueSubtitles.toSrt(cues(events))},
    vtt: {type: "text/vtt", text: (events) => LivecueSubtitles.toVtt(cues(events))},
  };

  // Download the transcript as `kind` ("json", "srt", "vtt") named `name.kind` through `link` (an <a>; its href
  // stays the blob URL of the text until the next download).
  function download(link, kind, events, meta, name) {
    const {type, text} = KINDS[kind];
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([text(events, meta)], {type: `${type};charset=utf-8`}));
    link.download = `${name}.${kind}`;
    link.click();
  }

  return {cues, json, download, kinds: Object.keys(KINDS)};
})();
if (typeof window !== "undefined") window.LivecueTranscript = LivecueTranscript;
