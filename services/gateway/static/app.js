// The Fruits! page: log in with a token, send a photo, show the answer, take the user's verdict.
// Plain JS against the gateway's /v1 API; the token lives in localStorage and travels only in
// the Authorization header.
"use strict";

const TOKEN_KEY = "fruits.token";
const POLL_INTERVAL_MS = 1000;
const WAIT_LIMIT_MS = 120000; // the services may be slow to warm up; after this the user is told
const NUTRIENTS = [
  ["energy_kcal", "Energy", "kcal"],
  ["water_g", "Water", "g"],
  ["sugars_g", "Sugars", "g"],
  ["fibre_g", "Fibre", "g"],
  ["vitamin_c_mg", "Vitamin C", "mg"],
  ["potassium_mg", "Potassium", "mg"],
];

const $ = (id) => document.getElementById(id);
let token = localStorage.getItem(TOKEN_KEY);
let commonNames = new Map(); // fruit type → common name, from the catalog
let shown = null; // the photo object in the result card
let waiting = null; // AbortController of the wait for the current photo's prediction

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

async function detailOf(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return response.statusText;
  }
}

async function api(path, options = {}, withToken = token) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${withToken}` };
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch {
    throw new ApiError(0, "Cannot reach the server: check your connection and try again.");
  }
  if (!response.ok) {
    throw new ApiError(response.status, await detailOf(response), response.headers.get("Retry-After"));
  }
  return response.status === 204 ? null : response.json();
}

function typeName(type) {
  return commonNames.get(type) || type.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

function percent(value) {
  return value > 0 && value < 0.005 ? "< 1 %" : `${Math.round(value * 100)} %`;
}

// Nutrient figures arrive as float32 (74.91000366210938); the sources give at most two decimals.
const figure = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

function varietyName(label) {
  return label.replace(/\s+\d+$/, ""); // Fruits-360's class names end in a number
}

function show(element, visible) {
  element.hidden = !visible;
}

function clear(element) {
  element.replaceChildren();
}

function item(text) {
  const li = document.createElement("li");
  li.textContent = text;
  return li;
}

// --- log in and out --------------------------------------------------------------------------

async function logIn(candidate) {
  const me = await api("/v1/me", {}, candidate);
  token = candidate;
  localStorage.setItem(TOKEN_KEY, candidate);
  $("who").textContent = me.region ? `${me.user} (${me.region})` : me.user;
  show($("login"), false);
  show($("who-box"), true);
  show($("app"), true);
  await Promise.all([loadCatalog(), loadHistory()]);
}

function logOut(message = "") {
  if (waiting) waiting.abort();
  token = null;
  shown = null;
  localStorage.removeItem(TOKEN_KEY);
  show($("app"), false);
  show($("who-box"), false);
  show($("result"), false);
  show($("login"), true);
  $("token").value = "";
  $("login-error").textContent = message;
  show($("login-error"), Boolean(message));
  $("token").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const candidate = $("token").value.trim();
  if (!candidate) {
    $("login-error").textContent = "Paste your access token first.";
    show($("login-error"), true);
    return;
  }
  $("login-submit").disabled = true;
  try {
    await logIn(candidate);
    show($("login-error"), false);
    $("photo-input").focus();
  } catch (error) {
    $("login-error").textContent =
      error.status === 401 ? "That token was not accepted. Check it and try again." : error.message;
    show($("login-error"), true);
  } finally {
    $("login-submit").disabled = false;
  }
}

// An expired or revoked token on any call: back to the log-in form, saying why.
function handle(error, where) {
  if (error.status === 401) {
    logOut("Your token is no longer accepted: log in again.");
    return true;
  }
  where.textContent = error.message;
  show(where, true);
  return false;
}

// --- catalog and history ---------------------------------------------------------------------

async function loadCatalog() {
  const { types } = await api("/v1/catalog/types");
  commonNames = new Map(types.map((t) => [t.type, t.common_name]));
  const select = $("corrected-type");
  clear(select);
  const prompt = new Option("Choose a fruit…", "");
  prompt.disabled = true;
  prompt.selected = true;
  select.add(prompt);
  for (const t of [...types].sort((a, b) => a.common_name.localeCompare(b.common_name))) {
    select.add(new Option(t.common_name, t.type));
  }
}

function summary(photo) {
  const p = photo.prediction;
  if (photo.status !== "done" || !p) return "recognising…";
  if (p.unsure) return `not sure (${p.top5_types.slice(0, 3).map((t) => typeName(t.label)).join(", ")})`;
  return `${typeName(p.fruit_type)} · ${percent(p.type_confidence)}`;
}

function verdict(photo) {
  const f = photo.feedback;
  if (!f) return "";
  return f.correct ? " · you said right" : ` · you said: ${typeName(f.corrected_type || "something else")}`;
}

async function loadHistory() {
  try {
    const { photos } = await api("/v1/photos?limit=20");
    renderHistory(photos);
  } catch (error) {
    if (error.status === 401) logOut("Your token is no longer accepted: log in again.");
    // else the history stays as it was: it is not worth an error banner
  }
}

function renderHistory(photos) {
  const list = $("history-list");
  clear(list);
  show($("history-empty"), photos.length === 0);
  for (const photo of photos) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "history-item";
    button.dataset.photoId = photo.photo_id;
    const when = new Date(photo.submitted_at);
    const time = document.createElement("time");
    time.dateTime = photo.submitted_at;
    time.textContent = when.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
    const what = document.createElement("span");
    what.textContent = summary(photo) + verdict(photo);
    button.append(what, time);
    button.addEventListener("click", () => openPhoto(photo.photo_id));
    li.append(button);
    list.append(li);
  }
}

async function openPhoto(photoId) {
  if (waiting) waiting.abort();
  show($("upload-error"), false);
  try {
    const photo = await api(`/v1/photos/${encodeURIComponent(photoId)}`);
    $("result-photo").hidden = true;
    if (photo.status === "done") {
      render(photo);
    } else {
      setProgress("recognising");
      await follow(photoId);
    }
    $("result").focus();
  } catch (error) {
    if (error.name !== "AbortError") handle(error, $("upload-error"));
  }
}

// --- sending a photo ---------------------------------------------------------------------------

function setProgress(step, text = "") {
  const steps = ["uploading", "recognising", "done"];
  show($("progress"), true);
  $("progress").dataset.state = step;
  for (const li of $("progress").querySelectorAll("li")) {
    const index = steps.indexOf(li.dataset.step);
    li.classList.toggle("current", li.dataset.step === step);
    li.classList.toggle("passed", index < steps.indexOf(step));
    if (li.dataset.step === step) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  }
  show($("upload-progress"), step === "uploading");
  $("progress-text").textContent = text;
}

const UPLOAD_ERRORS = {
  413: () => "That photo is too large. Try a smaller one (or a lower camera resolution).",
  415: () => "That file is not a photo the service can read. Send a JPEG, PNG or WebP image.",
  429: (wait) => `You are sending photos faster than allowed. Try again${wait}.`,
  503: (wait) => `The service is busy right now. Try again${wait}.`,
};

function coordinates() {
  if (!$("use-location").checked || !navigator.geolocation) return Promise.resolve(null);
  return new Promise((resolve) =>
    navigator.geolocation.getCurrentPosition(
      (position) => resolve(position.coords),
      () => resolve(null), // refused or unavailable: the gateway picks the region without it
      { timeout: 5000, maximumAge: 600000 },
    ),
  );
}

// XMLHttpRequest rather than fetch: it reports upload progress, which matters on a phone.
function post(form) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/photos");
    request.setRequestHeader("Authorization", `Bearer ${token}`);
    request.responseType = "json";
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) $("upload-progress").value = (100 * event.loaded) / event.total;
    };
    request.onload = () => {
      if (request.status === 202 || request.status === 200) return resolve(request.response);
      const detail = request.response && request.response.detail;
      const retry = request.getResponseHeader("Retry-After");
      const wait = retry ? ` in ${retry} s` : " in a moment";
      const message = UPLOAD_ERRORS[request.status]
        ? UPLOAD_ERRORS[request.status](wait)
        : `The photo was not accepted (${request.status}${detail ? `: ${detail}` : ""}).`;
      reject(new ApiError(request.status, message, retry));
    };
    request.onerror = () => reject(new ApiError(0, "Cannot reach the server: check your connection and try again."));
    request.send(form);
  });
}

async function send(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    handle(new ApiError(415, UPLOAD_ERRORS[415]()), $("upload-error"));
    return;
  }
  if (waiting) waiting.abort();
  show($("upload-error"), false);
  show($("result"), false);
  setProgress("uploading");
  $("upload-progress").value = 0;
  const form = new FormData();
  form.append("photo", file, file.name || "photo.jpg");
  const coords = await coordinates();
  if (coords) {
    form.append("latitude", String(coords.latitude));
    form.append("longitude", String(coords.longitude));
  }
  try {
    const accepted = await post(form);
    const preview = $("result-photo");
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.alt = "Your photo";
    setProgress("recognising");
    loadHistory();
    await follow(accepted.photo_id);
    preview.hidden = false;
    $("result").focus();
  } catch (error) {
    if (error.name === "AbortError") return; // another photo took over
    show($("progress"), false);
    handle(error, $("upload-error"));
  } finally {
    $("photo-input").value = "";
    $("file-input").value = "";
  }
}

// --- waiting for the prediction ----------------------------------------------------------------

// The prediction of ``photoId``, rendered: from the server-sent event stream (read with fetch so
// that the token stays in a header), or by polling when streaming is not possible.
async function follow(photoId) {
  const controller = new AbortController();
  waiting = controller;
  const timer = setTimeout(() => controller.abort(new DOMException("timed out", "TimeoutError")), WAIT_LIMIT_MS);
  try {
    let photo = null;
    try {
      photo = await streamed(photoId, controller.signal);
    } catch (error) {
      if (controller.signal.aborted) throw controller.signal.reason || error;
    }
    photo = photo || (await polled(photoId, controller.signal));
    if (waiting !== controller) return;
    render(photo);
    loadHistory();
  } catch (error) {
    if (error.name === "TimeoutError") {
      show($("progress"), false);
      throw new ApiError(0, "No answer yet: the service may be warming up. Your photo is in the history below; " +
        "open it there in a moment.");
    }
    throw error;
  } finally {
    clearTimeout(timer);
    if (waiting === controller) waiting = null;
  }
}

async function streamed(photoId, signal) {
  const response = await fetch(`/v1/photos/${encodeURIComponent(photoId)}/events`, {
    headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
    signal,
  });
  if (response.status === 401) throw new ApiError(401, await detailOf(response));
  if (!response.ok || !response.body) return null;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return null;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const lines = block.split("\n");
        const event = (lines.find((l) => l.startsWith("event:")) || "event: message").slice(6).trim();
        const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (event === "prediction" && data) {
          const photo = JSON.parse(data);
          if (photo.status === "done") return photo;
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function polled(photoId, signal) {
  for (;;) {
    const photo = await api(`/v1/photos/${encodeURIComponent(photoId)}`, { signal });
    if (photo.status === "done") return photo;
    await new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, POLL_INTERVAL_MS);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(signal.reason);
      });
    });
  }
}

// --- the answer ------------------------------------------------------------------------------

function render(photo) {
  shown = photo;
  const p = photo.prediction;
  setProgress("done");
  const card = $("result");
  card.dataset.photoId = photo.photo_id;
  card.dataset.status = photo.status;
  const unsure = Boolean(p.unsure) || !p.fruit_type;
  card.dataset.unsure = String(unsure);
  $("result-type").textContent = unsure
    ? "Not sure — is it one of these?"
    : (p.fruit && p.fruit.common_name) || typeName(p.fruit_type);
  $("result-type").dataset.fruitType = unsure ? "" : p.fruit_type;
  $("result-confidence").textContent = unsure ? "" : `${percent(p.type_confidence)} sure`;
  $("result-variety").textContent = unsure ? "" : `Variety: ${varietyName(p.label)} (${percent(p.confidence)})`;

  show($("unsure"), unsure);
  // Unsure, the choices are the verdict; what is left is "none of these".
  show($("feedback-right"), !unsure);
  $("feedback-title").textContent = unsure ? "None of these?" : "Is that right?";
  $("feedback-wrong").textContent = unsure ? "It is …" : "Wrong — it is …";
  const choices = $("unsure-choices");
  clear(choices);
  if (unsure) {
    for (const t of p.top5_types.slice(0, 3)) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.type = t.label;
      button.textContent = `${typeName(t.label)} (${percent(t.confidence)})`;
      button.addEventListener("click", () => giveFeedback(t.label));
      choices.append(button);
    }
  }

  const others = $("other-types");
  clear(others);
  const rest = unsure ? p.top5_types.slice(3) : p.top5_types.filter((t) => t.label !== p.fruit_type);
  for (const t of rest) others.append(item(`${typeName(t.label)} — ${percent(t.confidence)}`));
  show($("others-box"), rest.length > 0);

  const fruit = unsure ? null : p.fruit;
  show($("fruit-facts"), Boolean(fruit));
  if (fruit) renderFruit(fruit);
  renderFeedback(photo);
  show(card, true);
}

function renderFruit(fruit) {
  const body = $("nutrition-body");
  clear(body);
  for (const [key, name, unit] of NUTRIENTS) {
    const row = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    row.append(th);
    const value = fruit.nutrition ? fruit.nutrition[key] : null;
    row.insertCell().textContent = value === null || value === undefined ? "—" : `${figure.format(value)} ${unit}`;
  }
  $("storage-advice").textContent = fruit.storage_advice || "—";
  const sources = $("sources");
  clear(sources);
  for (const source of fruit.sources || []) {
    const li = document.createElement("li");
    const url = source.match(/https?:\/\/\S+/);
    if (url) {
      const a = document.createElement("a");
      a.href = url[0];
      a.rel = "noopener";
      a.target = "_blank";
      a.textContent = source;
      li.append(a);
    } else {
      li.textContent = source;
    }
    sources.append(li);
  }
}

// --- feedback --------------------------------------------------------------------------------

function renderFeedback(photo) {
  const f = photo.feedback;
  const given = Boolean(f);
  for (const id of ["feedback-right", "feedback-wrong", "feedback-send", "corrected-type"]) $(id).disabled = given;
  for (const button of $("unsure-choices").querySelectorAll("button")) button.disabled = given;
  show($("correction"), false);
  $("feedback-wrong").setAttribute("aria-expanded", "false");
  $("corrected-type").selectedIndex = 0;
  $("feedback-status").textContent = given
    ? f.correct
      ? "Thanks — you said it is right."
      : `Thanks — you said it is ${typeName(f.corrected_type || "something else")}.`
    : "";
}

// ``correctedType`` null: "Right"; else the type the user says it is (right if it is the predicted one).
async function giveFeedback(correctedType) {
  const photo = shown;
  if (!photo) return;
  const predicted = photo.prediction.unsure ? null : photo.prediction.fruit_type;
  const correct = correctedType === null || correctedType === predicted;
  const body = correct ? { correct: true } : { correct: false, corrected_type: correctedType };
  $("feedback-status").textContent = "Sending…";
  try {
    await api(`/v1/photos/${encodeURIComponent(photo.photo_id)}/feedback`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (shown !== photo) return;
    photo.feedback = { correct, corrected_type: correct ? null : correctedType };
    renderFeedback(photo);
    loadHistory();
  } catch (error) {
    if (error.status === 401) return logOut("Your token is no longer accepted: log in again.");
    $("feedback-status").textContent =
      error.status === 409 ? "There is no answer to judge yet: wait for it." : `Not sent: ${error.message}`;
  }
}

function onWrong() {
  const open = $("correction").hidden;
  show($("correction"), open);
  $("feedback-wrong").setAttribute("aria-expanded", String(open));
  if (open) $("corrected-type").focus();
}

function onSendCorrection(event) {
  event.preventDefault();
  const type = $("corrected-type").value;
  if (!type) {
    $("feedback-status").textContent = "Choose the fruit it is first.";
    $("corrected-type").focus();
    return;
  }
  giveFeedback(type);
}

// --- wiring ----------------------------------------------------------------------------------

function wireDropZone() {
  const zone = $("drop-zone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) zone.addEventListener(name, () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    send(event.dataTransfer.files[0]);
  });
  // A photo dropped beside the zone would otherwise replace the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", () => logOut());
  for (const id of ["photo-input", "file-input"]) {
    $(id).addEventListener("change", (event) => send(event.target.files[0]));
  }
  $("feedback-right").addEventListener("click", () => giveFeedback(null));
  $("feedback-wrong").addEventListener("click", onWrong);
  $("feedback").addEventListener("submit", onSendCorrection);
  wireDropZone();
  if (token) {
    logIn(token).catch((error) =>
      logOut(error.status === 401 ? "Your token is no longer accepted: log in again." : error.message),
    );
  } else {
    $("token").focus();
  }
});
