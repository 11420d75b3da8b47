// calibclip search page: plain JS, no build step. Talks to the JSON API of `calibclip serve`.
"use strict";

const KEY_STORE = "calibclip.apiKey";
const $ = (id) => document.getElementById(id);
const state = { key: localStorage.getItem(KEY_STORE) || "", refFile: null, refId: null, stats: null };

function headers(extra = {}) {
  return state.key ? { ...extra, "X-API-Key": state.key } : extra;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// fetch + JSON, turning the server's {"error": ...} answers into thrown Errors
async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  if (resp.status === 401) { showKeyPanel(); }
  if (!resp.ok) {
    const err = new Error((body && body.error) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return body;
}

// Images: with a key they are fetched with the header (keeps the key out of URLs and logs).
async function loadImage(img, url) {
  if (!state.key) { img.src = url; return; }
  const resp = await fetch(url, { headers: headers() });
  if (!resp.ok) { img.alt = `image unavailable (${resp.status})`; return; }
  img.src = URL.createObjectURL(await resp.blob());
  img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
}

function showKeyPanel() {
  $("key-panel").hidden = false;
  $("key-input").focus();
}

async function refreshStats() {
  try {
    const s = await api("/stats");
    state.stats = s;
    $("stats").textContent = `${s.images.toLocaleString()} images · ${s.model}`;
    const warn = $("model-warning");  // the shipped synthetic model: say so on the page, every time
    warn.hidden = !s.model_warning;
    warn.textContent = s.model_warning ? `⚠ ${s.model_warning}` : "";
    $("key-button").hidden = !state.key;
    const calib = $("calib");
    calib.disabled = !s.calibration.usable;
    if (!s.calibration.usable) calib.checked = false;
    calib.parentElement.title = s.calibration.usable ? "CalibCLIP: calibrated query + discriminative re-ranking"
                                                     : `CalibCLIP unavailable: ${s.calibration.reason}`;
    $("composed-button").disabled = !s.composed.enabled;
    $("composed-note").textContent = s.composed.enabled ? "" : `Composed search is off: ${s.composed.reason}.`;
  } catch (e) {
    $("stats").textContent = e.status === 401 ? "API key needed" : `server unreachable: ${e.message}`;
  }
}

function render(result) {
  const grid = $("results");
  grid.replaceChildren();
  const tpl = $("card-template");
  for (const hit of result.hits) {
    const card = tpl.content.firstElementChild.cloneNode(true);
    card.dataset.id = hit.id;
    card.querySelector(".rank").textContent = `#${hit.rank}`;
    card.querySelector(".score").textContent = hit.score.toFixed(4);
    card.querySelector(".name").textContent = hit.name;
    const img = card.querySelector("img");
    img.alt = hit.name;
    loadImage(img, hit.thumb);
    card.querySelector(".open").href = hit.url;
    card.addEventListener("click", (ev) => {
      if (ev.target.closest(".actions")) return;
      for (const other of grid.querySelectorAll(".card.open")) if (other !== card) other.classList.remove("open");
      card.classList.toggle("open");
    });
    card.querySelector(".similar").addEventListener("click", () => searchSimilar(hit.id, hit.name));
    card.querySelector(".use-ref").addEventListener("click", () => useAsReference(hit.id, hit.thumb, hit.name));
    card.querySelector(".open").addEventListener("click", async (ev) => {
      if (!state.key) return;  // plain link works without a key
      ev.preventDefault();
      const resp = await fetch(hit.url, { headers: headers() });
      window.open(URL.createObjectURL(await resp.blob()), "_blank", "noopener");
    });
    grid.appendChild(card);
  }
  const warn = result.warnings && result.warnings.length ? ` (${result.warnings.join("; ")})` : "";
  setStatus(`${result.hits.length} results in ${result.took_ms} ms${warn}`);
}

async function run(label, promise) {
  setStatus(`${label}…`);
  try {
    render(await promise);
  } catch (e) {
    setStatus(e.message, true);
  }
}

function k() { return parseInt($("k").value, 10); }

function searchText() {
  const query = $("query").value.trim();
  if (!query) return;
  run("searching", api("/search/text", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query, k: k(), calib: $("calib").checked }),
  }));
}

function referenceForm() {
  const form = new FormData();
  if (state.refFile) form.append("image", state.refFile, state.refFile.name || "reference");
  else if (state.refId !== null) form.append("id", String(state.refId));
  form.append("k", String(k()));
  return form;
}

function searchSimilar(id, name) {
  const form = new FormData();
  form.append("id", String(id));
  form.append("k", String(k()));
  run(`images similar to ${name}`, api("/search/image", { method: "POST", body: form }));
}

function searchReference() {
  if (!state.refFile && state.refId === null) { setStatus("choose a reference image first", true); return; }
  run("searching similar images", api("/search/image", { method: "POST", body: referenceForm() }));
}

function searchComposed() {
  if (!state.refFile && state.refId === null) { setStatus("choose a reference image first", true); return; }
  const text = $("mod-text").value.trim();
  if (!text) { setStatus("say how the reference should change", true); return; }
  const form = referenceForm();
  form.append("text", text);
  form.append("calib", $("calib").checked ? "true" : "false");
  run("composed search", api("/search/composed", { method: "POST", body: form }));
}

function showReference(label) {
  $("ref-preview").hidden = false;
  $("drop-hint").hidden = true;
  $("drop").title = label;
}

function setReferenceFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { setStatus(`${file.name}: not an image`, true); return; }
  const limit = state.stats ? state.stats.limits.max_upload_mb : 10;
  if (file.size > limit * 1024 * 1024) { setStatus(`${file.name}: larger than ${limit} MB`, true); return; }
  state.refFile = file;
  state.refId = null;
  const preview = $("ref-preview");
  preview.src = URL.createObjectURL(file);
  showReference(file.name);
  setStatus(`reference: ${file.name}`);
}

function useAsReference(id, thumb, name) {
  state.refFile = null;
  state.refId = id;
  loadImage($("ref-preview"), thumb);
  showReference(name);
  setStatus(`reference: ${name}`);
  $("mod-text").focus();
}

function clearReference() {
  state.refFile = null;
  state.refId = null;
  $("ref-preview").hidden = true;
  $("ref-preview").removeAttribute("src");
  $("drop-hint").hidden = false;
  $("ref-file").value = "";
}

function wire() {
  $("text-form").addEventListener("submit", (ev) => { ev.preventDefault(); searchText(); });
  $("composed-form").addEventListener("submit", (ev) => { ev.preventDefault(); searchComposed(); });
  $("similar-button").addEventListener("click", searchReference);
  $("clear-ref").addEventListener("click", clearReference);
  $("key-button").addEventListener("click", showKeyPanel);
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("key-input").value.trim();
    if (state.key) localStorage.setItem(KEY_STORE, state.key); else localStorage.removeItem(KEY_STORE);
    $("key-panel").hidden = true;
    refreshStats();
  });
  const drop = $("drop");
  drop.addEventListener("click", () => $("ref-file").click());
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") $("ref-file").click(); });
  $("ref-file").addEventListener("change", (ev) => setReferenceFile(ev.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (ev) => setReferenceFile(ev.dataTransfer.files[0]));
}

wire();
refreshStats();
