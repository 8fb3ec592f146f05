"use strict";
// The page's whole behaviour. It talks only to this service's API (README "API"), and puts
// whatever the service sends into the page as text (textContent), never as markup.

const $ = (id) => document.getElementById(id);
const KEY = "ism.apiKey";
const POOL_REFRESH_MS = 2000;
const HEALTH_REFRESH_MS = 5000;

// ---------------------------------------------------------------- talking to the service

/** An answer that was not 2xx, with the service's own wording. */
class ServiceError extends Error {}
/** No answer at all: the service is down or the network is. */
class Unreachable extends Error {}

/** The service's words for a failed answer: `error` in its shape, `error.message` in OpenAI's. */
async function serviceError(response) {
  let words = response.statusText || "no reason given";
  try {
    const body = await response.json();
    if (typeof body.error === "string") words = body.error;
    else if (body.error && typeof body.error.message === "string") words = body.error.message;
  } catch (_) { /* not JSON: the status line is all there is */ }
  return new ServiceError(`${response.status}: ${words}`);
}

/** fetch() with the API key; asks for a key on 401 and tries again with it. */
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new Unreachable(`The service cannot be reached (${e.message}). Is it running?`);
  }
  if (response.status === 401) {
    const refused = await serviceError(response);
    // A request sent with a key since replaced needs no new one: try again with the current key.
    if (sessionStorage.getItem(KEY) === key) {
      await askForKey(key ? `The service refused that key (${refused.message}).` : "This service asks for an API key.", refused);
    }
    return api(path, options);
  }
  if (!response.ok) throw await serviceError(response);
  return response;
}

const getJson = async (path) => (await api(path)).json();

let keyAsked = null;

/**
 * Shows the key dialog once, however many requests are waiting for it: they go on with the
 * key given, or fail with the service's 401 (`refused`) when the dialog is closed without one.
 */
function askForKey(why, refused) {
  if (!keyAsked) {
    keyAsked = new Promise((resolve, reject) => {
      const dialog = $("key-dialog");
      let given = false;
      $("key-why").textContent = why;
      $("key").value = "";
      $("key-form").onsubmit = (event) => {
        event.preventDefault();
        const key = $("key").value.trim();
        if (!key) return;
        sessionStorage.setItem(KEY, key);
        $("forget-key").hidden = false;
        given = true;
        dialog.close();
      };
      $("key-cancel").onclick = () => dialog.close();
      // However it closes (the form, Cancel, Escape), the waiting requests learn the outcome.
      dialog.onclose = () => {
        keyAsked = null;
        if (given) resolve();
        else reject(refused);
      };
      dialog.showModal();
      $("key").focus();
    });
  }
  return keyAsked;
}

$("forget-key").hidden = !sessionStorage.getItem(KEY);
$("forget-key").onclick = () => {
  sessionStorage.removeItem(KEY);
  $("forget-key").hidden = true;
};

// ---------------------------------------------------------------- small formatting helpers

/** 83.4 -> "1:23.4" (or "1:01:23.4"). */
function clock(seconds) {
  const tenths = Math.round(seconds * 10);
  const h = Math.floor(tenths / 36000), m = Math.floor(tenths / 600) % 60, s = (tenths % 600) / 10;
  const ss = s.toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** 83.4 -> "00:01:23,400" (SRT) or "00:01:23.400" (VTT). */
function subtitleTime(seconds, separator) {
  const ms = Math.round(seconds * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(Math.floor(ms / 3600000))}:${pad(Math.floor(ms / 60000) % 60)}:${pad(Math.floor(ms / 1000) % 60)}${separator}${pad(ms % 1000, 3)}`;
}

/** 7260000 ms -> "2 h 1 min". */
function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor(s / 60) % 60} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor(s / 3600) % 24} h`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(0)} kB`;
  return `${(n / 1048576).toFixed(1)} MB`;
}

/** A state word as a badge: the word, a shape and a colour, so colour is never alone. */
function badge(word, kind) {
  const state = document.createElement("span");
  state.className = `state ${kind}`;
  const shape = document.createElement("span");
  shape.className = "shape";
  shape.setAttribute("aria-hidden", "true");
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = word;
  state.append(shape, label);
  return state;
}

const KIND = {
  healthy: "good", warm: "good", ready: "good",
  starting: "busy", loading: "busy", degraded: "busy",
  unhealthy: "bad", unreachable: "bad",
  draining: "draining",
  stopped: "idle", cold: "idle",
};
const kindOf = (word) => KIND[word] || "idle";

/** A table row of text cells; `labels` name them on a phone, where a row becomes a card. */
function row(labels, cells) {
  const tr = document.createElement("tr");
  cells.forEach((cell, i) => {
    const td = document.createElement("td");
    td.dataset.label = labels[i];
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell;
    if (typeof cell === "number") td.className = "num";
    tr.append(td);
  });
  return tr;
}

/**
 * Puts `rows` in `tbody`, or one row saying `nothing`. A control that had the focus (a Load
 * button, say) has it again in the new rows, so a refresh never throws a keyboard user out.
 */
function fill(tbody, rows, nothing) {
  const focused = tbody.contains(document.activeElement) ? document.activeElement.dataset.focusKey : undefined;
  if (rows.length) {
    tbody.replaceChildren(...rows);
    const again = focused && tbody.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  } else {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = document.createElement("td");
    td.colSpan = 8;
    td.textContent = nothing;
    tr.append(td);
    tbody.replaceChildren(tr);
  }
}

function showError(element, error) {
  element.textContent = error ? error.message : "";
  element.hidden = !error;
}

// ---------------------------------------------------------------- tabs

const TABS = ["transcribe", "pool"];

function showTab(name) {
  for (const tab of TABS) {
    const selected = tab === name;
    $(`tab-${tab}`).setAttribute("aria-selected", String(selected));
    $(`tab-${tab}`).tabIndex = selected ? 0 : -1;
    $(tab).hidden = !selected;
  }
  history.replaceState(null, "", `#${name}`);
  if (name === "pool") refreshPool();
}

for (const tab of TABS) $(`tab-${tab}`).onclick = () => showTab(tab);
// Arrow keys, Home and End move between tabs, as in any tab list.
document.querySelector(".tabs").onkeydown = (event) => {
  const current = TABS.findIndex((tab) => $(`tab-${tab}`).getAttribute("aria-selected") === "true");
  const moves = {
    ArrowRight: (current + 1) % TABS.length,
    ArrowLeft: (current - 1 + TABS.length) % TABS.length,
    Home: 0,
    End: TABS.length - 1,
  };
  if (!(event.key in moves)) return;
  event.preventDefault();
  const next = TABS[moves[event.key]];
  showTab(next);
  $(`tab-${next}`).focus();
};
window.onhashchange = () => showTab(location.hash === "#pool" ? "pool" : "transcribe");

// ---------------------------------------------------------------- health, in the header

/** The default model's health (`/health`, public), while the tab is on screen. */
async function refreshHealth() {
  let word = "unreachable", detail = "";
  try {
    // 503 when no worker serves: read the body either way.
    const body = await (await fetch("/health")).json();
    word = body.status;
    detail = ` · default model: ${body.pool.healthyWorkers}/${body.pool.totalWorkers} workers`;
    if (choices === "unreachable") loadChoices();
  } catch (_) { /* unreachable */ }
  const text = `${word}${detail}`;
  // Replaced only when it changes, so a screen reader hears changes, not every poll.
  if ($("health").textContent !== text) $("health").replaceChildren(badge(text, kindOf(word)));
  if (!document.hidden) healthTimer = setTimeout(refreshHealth, HEALTH_REFRESH_MS);
}
let healthTimer = null;

// ---------------------------------------------------------------- transcribe: the audio

let source = null; // { blob, name }

function setSource(blob, name) {
  source = { blob, name };
  $("source").textContent = `${name} · ${bytes(blob.size)}`;
  $("go").disabled = false;
}

$("file").onchange = () => {
  const file = $("file").files[0];
  if (file) setSource(file, file.name);
};

const drop = $("drop");
drop.ondragover = (event) => { event.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) setSource(file, file.name);
};

let recorder = null;

function setUpRecording() {
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    // Browsers give the microphone only to secure pages: https, or this machine's localhost.
    $("record").disabled = true;
    $("record-note").hidden = false;
    $("record-note").textContent =
      "Recording needs the page over HTTPS or on localhost (browsers allow the microphone nowhere else); a file works everywhere.";
  }
  $("record").onclick = () => (recorder ? recorder.stop() : startRecording());
}

async function startRecording() {
  showError($("transcribe-error"), null);
  // Asking for the microphone takes a moment (and a permission prompt): one request at a time.
  $("record").disabled = true;
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    showError($("transcribe-error"), new Error(`The microphone is not available: ${e.message || e.name}`));
    return;
  } finally {
    $("record").disabled = false;
  }
  const chunks = [];
  const started = Date.now();
  recorder = new MediaRecorder(stream);
  const tick = setInterval(() => { $("record-time").textContent = clock((Date.now() - started) / 1000); }, 200);
  recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
  recorder.onstop = () => {
    clearInterval(tick);
    stream.getTracks().forEach((track) => track.stop());
    // Whatever container this browser records in (WebM/Opus, Ogg, MP4): the service converts it.
    const type = recorder.mimeType || "audio/webm";
    const seconds = (Date.now() - started) / 1000;
    setSource(new Blob(chunks, { type }), `Recording ${clock(seconds)} (${type.split(";")[0]})`);
    recorder = null;
    $("record").textContent = "Record";
    $("record").classList.remove("recording");
    $("record-time").textContent = "";
  };
  recorder.start(1000);
  $("record").textContent = "Stop recording";
  $("record").classList.add("recording");
}

// ---------------------------------------------------------------- transcribe: the request

let segments = [];
let resultText = "";
let transcriptName = ""; // the file the transcript on screen came from, for download names
let running = null; // the AbortController of the transcription in progress

/** The file as base64, without the `data:...;base64,` prefix. */
function base64Of(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(new Error(`The file cannot be read: ${reader.error.message}`));
    reader.readAsDataURL(blob);
  });
}

function progress(text, done, total) {
  $("progress-box").hidden = false;
  $("progress-text").textContent = text;
  const bar = $("progress");
  if (total) {
    bar.max = total;
    bar.value = done;
  } else {
    bar.removeAttribute("value"); // indeterminate while nothing can be counted
  }
}

function addSegment(segment) {
  segments.push(segment);
  const li = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = `${clock(segment.start)} – ${clock(segment.end)}`;
  const text = document.createElement("span");
  text.textContent = segment.text;
  li.append(time, text);
  $("segments").append(li);
  $("output").hidden = false;
}

$("timestamps").onchange = () => $("segments").classList.toggle("plain", !$("timestamps").checked);

/**
 * Reads a server-sent event stream, calling `handle(event, data)` for each event. A connection
 * cut mid-stream is said as such; if `handle` throws, the stream is let go.
 */
async function readEvents(response, handle) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      let next;
      try {
        next = await reader.read();
      } catch (e) {
        if (e.name === "AbortError") throw e;
        throw new Error(`The connection to the service was cut before the transcript was complete (${e.message}).`);
      }
      if (next.done) return;
      buffer += next.value.replace(/\r/g, "");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (data) handle(event, JSON.parse(data));
      }
    }
  } catch (e) {
    reader.cancel().catch(() => {});
    throw e;
  }
}

/** The service's 413 names its byte limit; the page's share of it is smaller, and why. */
function explained(error) {
  if (error instanceof ServiceError && error.message.startsWith("413:")) {
    return new ServiceError(`${error.message} The page sends a file as base64, a third larger than the file itself.`);
  }
  return error;
}

async function transcribe(event) {
  event.preventDefault();
  if (!source || running) return;
  segments = [];
  resultText = "";
  transcriptName = source.name;
  $("segments").replaceChildren();
  $("output").hidden = true;
  $("partial").hidden = true;
  $("copied").textContent = "";
  showError($("transcribe-error"), null);
  running = new AbortController();
  $("go").disabled = true;
  $("cancel").hidden = false;
  $("cancel").focus();
  const started = Date.now();
  let finished = false;
  try {
    progress(`Reading ${source.name}…`);
    const body = { content: await base64Of(source.blob), stream: true, timestamps: $("timestamps").checked };
    if ($("language").value) body.language = $("language").value;
    if ($("model").value) body.model = $("model").value;
    progress(`Sending ${bytes(source.blob.size)} and converting…`);
    const response = await api("/api/v1/transcriptions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: running.signal,
    });
    await readEvents(response, (name, data) => {
      if (name === "begin") {
        progress(`Transcribing ${clock(data.duration)} of audio (${data.chunksTotal} ${data.chunksTotal === 1 ? "chunk" : "chunks"})…`, 0, data.chunksTotal);
      } else if (name === "segment") {
        addSegment(data);
        progress(`Transcribing: chunk ${data.chunksDone} of ${data.chunksTotal} done…`, data.chunksDone, data.chunksTotal);
      } else if (name === "result") {
        finished = true;
        const result = data.result;
        resultText = result.text;
        if (!segments.length) addSegment({ start: 0, end: result.duration, text: result.text });
        const took = ((Date.now() - started) / 1000).toFixed(1);
        const nothing = result.text ? "" : " · nothing recognised";
        progress(`Done: ${clock(result.duration)} of audio in ${took} s · language ${result.language}${nothing}`, 1, 1);
      } else if (name === "error") {
        throw new ServiceError(data.error && data.error.message ? data.error.message : data.error);
      }
    });
    if (!finished) throw new Error("The stream ended before the transcript was complete (the connection was cut).");
  } catch (e) {
    $("progress-box").hidden = true;
    showError($("transcribe-error"), e.name === "AbortError" ? new Error("Cancelled.") : explained(e));
    // What arrived stays on screen to read and copy, said to be incomplete.
    $("partial").hidden = !segments.length;
  } finally {
    running = null;
    $("go").disabled = !source;
    $("cancel").hidden = true;
    $("go").focus();
  }
}

$("transcribe-form").onsubmit = transcribe;
$("cancel").onclick = () => running && running.abort();

// ---------------------------------------------------------------- transcribe: the output

const plainText = () => resultText || segments.map((s) => s.text).join(" ");

function srt() {
  return segments.map((s, i) =>
    `${i + 1}\n${subtitleTime(s.start, ",")} --> ${subtitleTime(s.end, ",")}\n${s.text}\n`).join("\n");
}

/** Cue text as WebVTT wants it: `&`, `<` and `>` escaped (so "R&D" stays text, never a tag). */
const vttText = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function vtt() {
  return "WEBVTT\n\n" + segments.map((s) =>
    `${subtitleTime(s.start, ".")} --> ${subtitleTime(s.end, ".")}\n${vttText(s.text)}\n`).join("\n");
}

function download(text, extension, type) {
  const base = (transcriptName || "transcript").replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = `${base}.${extension}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

$("download-txt").onclick = () => download(plainText() + "\n", "txt", "text/plain");
$("download-srt").onclick = () => download(srt(), "srt", "application/x-subrip");
$("download-vtt").onclick = () => download(vtt(), "vtt", "text/vtt");

$("copy").onclick = async () => {
  const text = plainText();
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    // Without a secure context there is no clipboard API: copy through a selection instead.
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    if (!copied) {
      $("copied").textContent = "This browser would not copy: select the text and copy it by hand.";
      return;
    }
  }
  $("copied").textContent = "Copied.";
};

// ---------------------------------------------------------------- choices from the service

/** Whether the language and model lists are loading, loaded, or waiting for the service. */
let choices = "loading";

/**
 * The language and model lists, from the service. When it could not be reached, the next
 * health check that reaches it loads them; any other failure is shown, not retried.
 */
async function loadChoices() {
  choices = "loading";
  try {
    const [providers, models] = await Promise.all([getJson("/api/v1/providers"), getJson("/api/models")]);
    const names = typeof Intl.DisplayNames === "function" ? new Intl.DisplayNames(["en"], { type: "language" }) : null;
    const languages = providers.providers[0].capabilities.languages.map((code) => {
      let name = code;
      try { name = (names && names.of(code)) || code; } catch (_) { /* a code Intl does not know */ }
      return [code, name];
    }).sort((a, b) => a[1].localeCompare(b[1]));
    for (const [code, name] of languages) $("language").append(new Option(`${name} (${code})`, code));
    fillModelChoices(models.models);
    choices = "loaded";
    showError($("transcribe-error"), null);
  } catch (e) {
    choices = e instanceof Unreachable ? "unreachable" : "failed";
    showError($("transcribe-error"), e);
  }
}

function fillModelChoices(models) {
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren(new Option("the default model", ""));
  for (const model of models) select.append(new Option(`${model.id} (${model.state})`, model.id));
  select.value = chosen;
}

// ---------------------------------------------------------------- pool

let poolTimer = null;

async function refreshPool() {
  clearTimeout(poolTimer);
  if ($("pool").hidden) return;
  try {
    const [status, capacity, models, recent] = await Promise.all([
      getJson("/api/v1/status"), getJson("/api/capacity"), getJson("/api/models"), getJson("/api/inference/history?limit=20"),
    ]);
    renderFigures(status, capacity, recent.statistics);
    renderWorkers(status.workers);
    renderModels(models.models);
    renderRunning(status.transcriptions);
    renderHistory(recent);
    fillModelChoices(models.models);
    showError($("pool-error"), null);
    $("pool").classList.remove("stale");
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed every ${POOL_REFRESH_MS / 1000} s.`;
  } catch (e) {
    showError($("pool-error"), e);
    $("pool").classList.add("stale"); // what is still shown is from the last refresh that worked
  }
  // Only while someone looks: a hidden tab asks nothing of the service.
  if (!$("pool").hidden && !document.hidden) poolTimer = setTimeout(refreshPool, POOL_REFRESH_MS);
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  clearTimeout(healthTimer);
  refreshHealth();
  refreshPool();
});

function renderFigures(status, capacity, statistics) {
  $("fig-workers").textContent = `${status.healthyWorkers} / ${status.totalWorkers}`;
  $("fig-load").textContent = `${capacity.currentLoad} / ${capacity.maxConcurrent}`;
  $("fig-queue").textContent = String(capacity.queueDepth);
  $("fig-success").textContent = statistics.totalInferences
    ? `${(statistics.successRate * 100).toFixed(1)} %`
    : "–";
}

function renderWorkers(workers) {
  const labels = ["Worker", "State", "Model", "In flight", "Served", "Restarts", "Uptime"];
  fill($("workers"), workers.map((w) => {
    const tr = row(labels, [w.id, badge(w.state, kindOf(w.state)), w.model, w.inFlight, w.requestCount, w.restarts, duration(w.uptime)]);
    tr.dataset.worker = w.id;
    tr.dataset.state = w.state;
    return tr;
  }), "No workers.");
}

function renderModels(models) {
  const labels = ["Model", "State", "Workers", "Last used", "Action"];
  fill($("models"), models.map((m) => {
    const warm = m.state !== "cold";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button small";
    button.textContent = warm ? "Unload" : "Load";
    button.setAttribute("aria-label", `${button.textContent} ${m.id}`);
    button.dataset.focusKey = m.id;
    button.onclick = () => loadOrUnload(button, m.id, warm ? "unload" : "load");
    const lastUsed = m.lastUsed ? new Date(m.lastUsed).toLocaleString() : "never";
    const tr = row(labels, [m.id, badge(m.state, kindOf(m.state)), m.workers, lastUsed, button]);
    tr.dataset.model = m.id;
    return tr;
  }), "No models configured.");
}

async function loadOrUnload(button, id, action) {
  button.disabled = true;
  button.textContent = action === "load" ? "Loading…" : "Unloading…";
  try {
    await api(`/api/models/${encodeURIComponent(id)}/${action}`, { method: "POST" });
    showError($("pool-error"), null);
  } catch (e) {
    showError($("pool-error"), e);
  }
  refreshPool();
}

function renderRunning(transcriptions) {
  $("running-box").hidden = !transcriptions.length;
  const labels = ["Inference", "Model", "Audio", "Chunks", "Elapsed"];
  fill($("running"), transcriptions.map((t) =>
    row(labels, [t.inferenceId, t.model, clock(t.audioSeconds), `${t.chunksDone} / ${t.chunksTotal}`, duration(t.elapsed)])), "");
}

function renderHistory(history) {
  const s = history.statistics;
  $("history-summary").textContent = s.totalInferences
    ? `${s.successfulInferences} of ${s.totalInferences} succeeded since start · average ${Math.round(s.averageProcessingTime)} ms`
    : "No inference yet.";
  const labels = ["Finished", "Model", "Time taken", "Result"];
  fill($("history"), history.history.map((h) =>
    row(labels, [new Date(h.timestamp).toLocaleTimeString(), h.modelId, `${h.processingTime} ms`,
      badge(h.success ? "succeeded" : `failed: ${h.error || "no reason given"}`, h.success ? "good" : "bad")])), "No inference yet.");
}

// ---------------------------------------------------------------- start

setUpRecording();
refreshHealth();
loadChoices();
showTab(location.hash === "#pool" ? "pool" : "transcribe");
