// livecue live page: webcam or local video file -> JPEG frames over the WebSocket protocol (docs/protocol.md)
// -> replies streamed token by token, shown over the video and on a timeline. Plain JS, no build step.
// A source that ends (the file's last frame) closes the session like Stop: the server watches the frames still
// queued, answers the pending questions, sends `closed` and closes the socket (1000); the status then reads "ended".
// The transcript (replies and answers) downloads as JSON, .srt or .vtt (subtitles.js, the writer of `livecue demo`).
"use strict";

const $ = (id) => document.getElementById(id);
const el = {
  status: $("status"), model: $("model"), video: $("video"), caption: $("caption"), placeholder: $("placeholder"),
  track: $("track"), now: $("now"), spanEnd: $("span-end"), start: $("start"), stop: $("stop"), file: $("file"),
  threshold: $("threshold"), thresholdValue: $("threshold-value"), fps: $("fps"), token: $("token"),
  ask: $("ask"), question: $("question"), askButton: $("ask-button"), log: $("log"), latency: $("latency"),
  canvas: $("canvas"), behind: $("behind"), prompts: $("prompts"), download: $("download"),
  exports: document.querySelectorAll("#export button"),
};
const MAX_SIDE = 640;          // frames are scaled so their long side is at most this many pixels
const MAX_BUFFERED = 2 << 20;  // skip a frame while this much is still waiting in the socket's send buffer
const MAX_LOG = 300;
const ACK_EVENTS = ["silence", "reply_delta", "reply", "answer", "dropped", "error"];  // a frame's time `t` came back

const state = {
  ws: null, stream: null, timer: null, ready: null, t0: 0, lastT: -1, mode: "webcam", sending: false,
  sentAt: new Map(), latencies: [], counts: {}, span: 30, caption: {key: null, text: "", timer: null},
  markers: [], keepalive: null,
  // one session: how it ends ("ended": the source ended; "closed": Stop), its `closed` event, the latest frame time
  // the server has answered for (its events' `t`), the first frame sent, questions not answered yet, the transcript
  ending: null, closed: null, closeSent: false, ackT: -1, firstT: null, pending: 0, transcript: [], behindTimer: null,
  inflight: null,
};

function setStatus(s, detail) {
  el.status.dataset.state = s;
  el.status.textContent = detail ? `${s}: ${detail}` : s;
}

function count(kind, n = 1) {
  state.counts[kind] = (state.counts[kind] || 0) + n;
  const dd = document.querySelector(`[data-count="${kind}"]`);
  if (dd) dd.textContent = String(state.counts[kind]);
}

function fmtT(t) { return t === null || t === undefined ? "" : `${Number(t).toFixed(1)}s`; }

function log(type, t, text) {
  const li = document.createElement("li");
  li.dataset.type = type;
  if (t !== null && t !== undefined) li.dataset.t = String(t);
  const time = document.createElement("time");
  time.textContent = fmtT(t);
  li.append(time, document.createTextNode(text));
  el.log.prepend(li);
  while (el.log.children.length > MAX_LOG) el.log.lastChild.remove();
  return li;
}

function mark(type, t, text) {
  if (t === null || t === undefined) return;
  if (t > state.span) { state.span = Math.ceil(t / 30) * 30; relayout(); }
  const m = document.createElement("div");
  m.className = `mark ${type}`;
  m.title = `${fmtT(t)} ${text}`;
  m.dataset.t = String(t);
  m.style.left = `${(100 * t) / state.span}%`;
  el.track.append(m);
}

function relayout() {
  el.spanEnd.textContent = `${state.span} s`;
  for (const m of el.track.children) m.style.left = `${(100 * Number(m.dataset.t)) / state.span}%`;
}

function showCaption(key, text, query) {
  const c = state.caption;
  clearTimeout(c.timer);
  c.key = key;
  el.caption.replaceChildren();
  if (query) {
    const q = document.createElement("span");
    q.className = "q";
    q.textContent = `Q: ${query}`;
    el.caption.append(q);
  }
  el.caption.append(document.createTextNode(text));
  el.caption.classList.add("show");
  c.timer = setTimeout(() => el.caption.classList.remove("show"), 5000);
}

// ---- protocol --------------------------------------------------------------------------------------------------
// The token travels as a WebSocket subprotocol ("livecue.token.TOKEN", beside plain "livecue", which the server
// selects), never in the URL, so it cannot end up in logs. A token with characters a subprotocol cannot hold falls
// back to ?token= (the server redacts it from its logs).
const SUBPROTOCOL_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function wsUrl() {
  const token = el.token.value.trim();
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const inUrl = token && !SUBPROTOCOL_CHARS.test(token);
  return `${proto}//${location.host}/ws${inUrl ? `?token=${encodeURIComponent(token)}` : ""}`;
}

function wsProtocols() {
  const token = el.token.value.trim();
  return token && SUBPROTOCOL_CHARS.test(token) ? ["livecue", `livecue.token.${token}`] : ["livecue"];
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function connect() {
  return new Promise((resolve, reject) => {
    setStatus("connecting");
    const ws = new WebSocket(wsUrl(), wsProtocols());
    ws.binaryType = "arraybuffer";
    state.ws = ws;
    ws.onopen = () => {
      setStatus("connected");
      // the server closes a session after its idle timeout without messages (e.g. a paused video): keep it open
      clearInterval(state.keepalive);
      state.keepalive = setInterval(() => send({type: "ping"}), 15000);
      send({type: "open", threshold: Number(el.threshold.value), fps: Number(el.fps.value) || undefined});
    };
    ws.onmessage = (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      if (ev.type === "ready") { state.ready = ev; resolve(ev); }
      if (ev.type === "error" && !state.ready) reject(new Error(`${ev.code}: ${ev.message}`));
      onEvent(ev);
    };
    ws.onerror = () => setStatus("error", "connection failed");
    ws.onclose = (e) => {
      if (state.ws === ws) { state.ws = null; clearInterval(state.keepalive); }
      if (!state.ready) reject(new Error(e.reason || `connection closed (${e.code})`));
      if (e.code !== 1000) {  // 1000 is the normal close after `closed`; anything else went wrong
        setStatus("error", `connection closed (code ${e.code}${e.reason ? `: ${e.reason}` : ""})`);
      } else if (!state.closed) {
        setStatus(state.ending || "closed");
      }
      endSession();
    };
  });
}

function onEvent(ev) {
  const t = ev.t;
  if (ACK_EVENTS.includes(ev.type) && typeof t === "number" && t > state.ackT) state.ackT = t;
  if (state.sentAt.has(t) && ["silence", "reply", "answer", "reply_delta"].includes(ev.type)) {
    state.latencies.push(performance.now() - state.sentAt.get(t));
    state.sentAt.delete(t);
    if (state.latencies.length > 50) state.latencies.shift();
    const avg = state.latencies.reduce((a, b) => a + b, 0) / state.latencies.length;
    el.latency.textContent = `${avg.toFixed(0)} ms`;
  }
  switch (ev.type) {
    case "ready":
      el.model.textContent = `${ev.model} · session ${ev.session} · ${ev.fps} fps`;
      el.fps.value = ev.fps;
      el.threshold.value = ev.threshold;
      el.thresholdValue.textContent = Number(ev.threshold).toFixed(3);
      log("ready", null, `session ${ev.session} opened (θ = ${ev.threshold}, ${ev.fps} fps)`);
      break;
    case "silence":
      count("silence");
      break;
    case "reply_delta": {
      const key = `${ev.kind}@${t}@${ev.query || ""}`;
      const text = (state.caption.key === key ? state.caption.text : "") + ev.text;
      state.caption.text = text;
      showCaption(key, text, ev.query);
      break;
    }
    case "reply":
    case "answer": {
      count(ev.type);
      const {token_ids: _ids, ...kept} = ev;  // the transcript keeps what the server said, less its token ids
      state.transcript.push(kept);
      if (ev.type === "answer") state.pending = Math.max(0, state.pending - 1);
      if (state.ending && !state.closed) setStatus("finishing", pendingText());
      state.caption.text = ev.text;
      showCaption(`${ev.type}@${t}@${ev.query || ""}`, ev.text, ev.query);
      log(ev.type, t, ev.type === "answer" ? `Q: ${ev.query} — A: ${ev.text}` : ev.text);
      mark(ev.type, t, ev.text);
      updateExport();
      break;
    }
    case "dropped":
      count("dropped", ev.count);
      log("dropped", t, `${ev.count} frame(s) dropped: ${ev.reason}`);
      mark("dropped", t, ev.reason);
      break;
    case "updated":
      el.thresholdValue.textContent = Number(ev.threshold).toFixed(3);
      break;
    case "error":
      count("error");
      if (ev.code === "too_many_queries") state.pending = Math.max(0, state.pending - 1);  // that one is not pending
      log("error", t, `${ev.code}: ${ev.message}`);
      mark("error", t, ev.message);
      break;
    case "closed":
      state.closed = ev;
      log("closed", t, `session closed (${ev.reason || ""}): ${ev.frames ?? 0} frames, ${ev.replies ?? 0} replies, ` +
          `${ev.answers ?? 0} answers`);
      if (state.ready) setStatus(state.ending || "closed", state.ending ? "" : ev.reason);  // else: refused (error)
      break;
  }
}

// ---- capture ---------------------------------------------------------------------------------------------------
async function openSource() {
  state.mode = document.querySelector('input[name="source"]:checked').value;
  const v = el.video;
  if (state.mode === "webcam") {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("the webcam needs a secure page (https:// or localhost); pick a video file instead");
    }
    state.stream = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: false});
    state.stream.getVideoTracks().forEach((tr) => tr.addEventListener("ended", () => finish("ended")));
    v.removeAttribute("src");
    v.srcObject = state.stream;
    v.loop = false;
  } else {
    const file = el.file.files[0];
    if (!file) throw new Error("choose a video file first");
    v.srcObject = null;
    v.src = URL.createObjectURL(file);
    v.loop = false;
  }
  await v.play();
  el.placeholder.hidden = true;
}

function streamTime() {
  if (state.mode === "file") return el.video.currentTime;
  return (performance.now() - state.t0) / 1000;
}

function captureFrame() {
  const v = el.video;
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN || v.readyState < 2 || v.videoWidth === 0 || state.sending) return;
  if (state.mode === "file" && (v.paused || v.ended)) return;
  const t = Math.round(streamTime() * 1000) / 1000;
  if (t <= state.lastT) return;  // a file rewound, or the clock has not moved: frame times must not decrease
  if (ws.bufferedAmount > MAX_BUFFERED) { count("skipped"); return; }
  const scale = Math.min(1, MAX_SIDE / Math.max(v.videoWidth, v.videoHeight));
  const w = Math.max(2, Math.round(v.videoWidth * scale)), h = Math.max(2, Math.round(v.videoHeight * scale));
  el.canvas.width = w;
  el.canvas.height = h;
  el.canvas.getContext("2d").drawImage(v, 0, 0, w, h);
  state.sending = true;
  state.inflight = new Promise((done) => el.canvas.toBlob((blob) => {
    try {
      if (!blob || !state.ws || state.ws.readyState !== WebSocket.OPEN || state.closeSent) return;
      const header = new ArrayBuffer(8);
      new DataView(header).setFloat64(0, t, true);  // little-endian float64 stream time, then the JPEG bytes
      state.ws.send(new Blob([header, blob]));
      state.lastT = t;
      if (state.firstT === null) state.firstT = t;
      state.sentAt.set(t, performance.now());
      if (state.sentAt.size > 200) state.sentAt.delete(state.sentAt.keys().next().value);
      count("sent");
      el.now.style.left = `${Math.min(100, (100 * t) / state.span)}%`;
    } finally {
      state.sending = false;
      done();
    }
  }, "image/jpeg", 0.8));
}

function stopCapture() {
  clearInterval(state.timer);
  state.timer = null;
  if (state.stream) { state.stream.getTracks().forEach((tr) => tr.stop()); state.stream = null; }
  el.start.disabled = false;
  el.stop.disabled = true;
  el.question.disabled = el.askButton.disabled = true;
}

// The socket is gone (after `closed`, or not): nothing more will come for this session.
function endSession() {
  stopCapture();
  clearInterval(state.behindTimer);
  state.behindTimer = null;
  el.behind.hidden = true;
  el.behind.dataset.lag = "";
}

// "behind by N s": how far the latest frame time the server has answered for trails the video's current time (the
// last frame sent once the source has ended). Shown past one second (or two frame intervals at a low fps).
function updateBehind() {
  if (state.firstT === null || state.closed) return;
  const acked = state.ackT >= 0 ? state.ackT : state.firstT;
  const lag = Math.max(0, (state.ending ? state.lastT : streamTime()) - acked);
  const fps = Number(state.ready && state.ready.fps) || 2;
  el.behind.dataset.lag = lag.toFixed(2);
  el.behind.hidden = lag < Math.max(1, 2 / fps);
  el.behind.textContent = `behind by ${lag.toFixed(1)} s`;
}

function pendingText() {
  return state.pending ? `answering ${state.pending} question${state.pending > 1 ? "s" : ""}` : "";
}

// End the stream: no more frames; the frame being encoded is still sent, then `close` (the server watches what it
// has queued, answers the pending questions, sends `closed`). `how`: "ended" (the source ended) or "closed" (Stop).
function finish(how) {
  if (state.ending || !state.ws) return;
  state.ending = how;
  clearInterval(state.timer);
  state.timer = null;
  if (state.stream) { state.stream.getTracks().forEach((tr) => tr.stop()); state.stream = null; }
  if (state.mode === "file" && !el.video.ended) el.video.pause();
  el.stop.disabled = true;
  el.question.disabled = el.askButton.disabled = true;
  setStatus("finishing", pendingText());
  log("finishing", state.lastT >= 0 ? state.lastT : null,
      `${how === "ended" ? "the source ended" : "stopped"}: answering what is pending, then closing`);
  Promise.resolve(state.inflight).then(() => { send({type: "close"}); state.closeSent = true; });
}

async function start() {
  el.start.disabled = true;
  Object.assign(state, {ready: null, lastT: -1, ending: null, closed: null, closeSent: false, ackT: -1, firstT: null,
                        pending: 0, transcript: [], inflight: null});
  updateExport();
  try {
    await openSource();
    await connect();
    state.t0 = performance.now();
    const fps = Number(state.ready.fps) || 2;
    state.timer = setInterval(captureFrame, 1000 / fps);
    clearInterval(state.behindTimer);
    state.behindTimer = setInterval(updateBehind, 250);
    captureFrame();
    setStatus("streaming");
    el.stop.disabled = false;
    el.question.disabled = el.askButton.disabled = false;
    if (state.mode === "file" && el.video.ended) finish("ended");  // a clip shorter than the connection took
  } catch (e) {
    setStatus("error", e.message);
    log("error", null, e.message);
    stopCapture();
  }
}

function stop() {
  finish("closed");
}

// ---- transcript export -----------------------------------------------------------------------------------------
function updateExport() {
  for (const button of el.exports) button.disabled = state.transcript.length === 0;
}

// Download the transcript (transcript.js) as "json", "srt" or "vtt".
function download(kind) {
  const r = state.ready || {};
  const meta = {model: r.model ?? null, session: r.session ?? null, fps: r.fps ?? null, threshold: r.threshold ?? null,
                source: state.mode === "file" ? (el.file.files[0] || {}).name || "file" : "webcam",
                closed: state.closed};
  LivecueTranscript.download(el.download, kind, state.transcript, meta, `livecue-${r.session || "session"}`);
}

// ---- wiring ----------------------------------------------------------------------------------------------------
let thresholdTimer = null;
el.threshold.addEventListener("input", () => {
  el.thresholdValue.textContent = Number(el.threshold.value).toFixed(3);
  clearTimeout(thresholdTimer);
  thresholdTimer = setTimeout(() => send({type: "update", threshold: Number(el.threshold.value)}), 150);
});
el.start.addEventListener("click", start);
el.stop.addEventListener("click", stop);
el.file.addEventListener("change", () => { document.querySelector('input[value="file"]').checked = true; });
el.video.addEventListener("ended", () => { if (state.timer) finish("ended"); });
for (const kind of LivecueTranscript.kinds) $(`export-${kind}`).addEventListener("click", () => download(kind));
el.prompts.addEventListener("click", (e) => {
  const chip = e.target.closest(".chip");
  if (!chip) return;
  el.question.value = chip.textContent.trim();
  if (!el.question.disabled) el.question.focus();
});
el.ask.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = el.question.value.trim();
  if (!text || !state.ws) return;
  send({type: "query", text, at: state.lastT >= 0 ? state.lastT : undefined});
  state.pending += 1;
  log("question", state.lastT >= 0 ? state.lastT : null, `You: ${text}`);
  el.question.value = "";
});

(function init() {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) {
    el.token.value = params.get("token");
    params.delete("token");  // out of the address bar and the history
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
  if (params.get("fps")) el.fps.value = params.get("fps");
  fetch("/health").then((r) => r.json()).then((h) => {
    el.model.textContent = `server up · ${h.sessions}/${h.max_sessions} sessions`;
  }).catch(() => setStatus("error", "server unreachable"));
  window.livecue = {state, start, stop, download};  // for debugging from the console
})();
