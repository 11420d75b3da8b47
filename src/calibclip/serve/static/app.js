// calibclip search page: plain JS, no build step. Talks to the JSON API of `calibclip serve`.
"use strict";

const KEY_STORE = "calibclip.apiKey";
const $ = (id) => document.getElementById(id);
// last: the search on screen (its descriptor and how many hits are shown), for "more", the toggles and the URL
const state = { key: localStorage.getItem(KEY_STORE) || "", refFile: null, refId: null, refName: "", stats: null,
                last: null };

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
    $("stats").title = $("stats").textContent;
    const warn = $("model-warning");  // the shipped synthetic model: say so on the page, every time
    warn.hidden = !s.model_warning;
    warn.textContent = s.model_warning ? `⚠ ${s.model_warning}` : "";
    $("key-button").hidden = !state.key;
    const calib = $("calib");
    calib.disabled = !s.calibration.usable;
    if (!s.calibration.usable) calib.checked = false;
    // the reason is on the page, not only in a tooltip (phones have no hover)
    $("calib-note").textContent = s.calibration.usable ? "" : `CalibCLIP unavailable: ${s.calibration.reason}`;
    $("calib-note").hidden = s.calibration.usable;
    $("composed-button").disabled = !s.composed.enabled;
    $("composed-note").textContent = s.composed.enabled ? "" : `Composed search is off: ${s.composed.reason}.`;
    return true;
  } catch (e) {
    $("stats").textContent = e.status === 401 ? "API key needed" : `server unreachable: ${e.message}`;
    return false;
  }
}

function clearResults() {
  $("results").replaceChildren();
  $("more").hidden = true;
  state.last = null;
}

function addCards(hits) {
  const grid = $("results");
  const tpl = $("card-template");
  for (const hit of hits) {
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
}

// What a search was, in words: "for “a red car”", "similar to shape04.png", ...
function describe(search) {
  if (search.mode === "text") return `for “${search.q}”${search.calib ? " (CalibCLIP)" : ""}`;
  if (search.mode === "similar") return `similar to ${search.name}`;
  return `for ${search.name} + “${search.q}”${search.calib ? " (CalibCLIP)" : ""}`;
}

// ---- searches: one descriptor {mode, q, id, file, name, k, calib} drives the request, URL and status
function request(search, offset) {
  if (search.mode === "text") {
    return api("/search/text", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query: search.q, k: search.k, calib: search.calib, offset }),
    });
  }
  const form = new FormData();
  if (search.file) form.append("image", search.file, search.file.name || "reference");
  else form.append("id", String(search.id));
  form.append("k", String(search.k));
  form.append("offset", String(offset));
  if (search.mode === "composed") {
    form.append("text", search.q);
    form.append("calib", search.calib ? "true" : "false");
  }
  return api(search.mode === "similar" ? "/search/image" : "/search/composed", { method: "POST", body: form });
}

async function runSearch(search, { append = false, push = true } = {}) {
  const offset = append && state.last ? state.last.shown : 0;
  setStatus(append ? "loading more…" : `searching ${describe(search)}…`);
  if (push) saveToUrl(search);
  let result;
  try {
    result = await request(search, offset);
  } catch (e) {
    setStatus(e.message, true);
    return;
  }
  if (!append) $("results").replaceChildren();
  if (search.mode === "similar" && search.id !== undefined && !search.file && result.hits.length &&
      result.hits[0].id === search.id && search.name.startsWith("image #")) {
    search.name = result.hits[0].name;  // opened from a URL: the best hit is the image itself
  }
  addCards(result.hits);
  const shown = offset + result.hits.length;
  state.last = { ...search, shown };
  $("more").hidden = !result.more;
  const warn = result.warnings && result.warnings.length ? ` (${result.warnings.join("; ")})` : "";
  setStatus(`${shown} results ${describe(search)} in ${result.took_ms} ms${warn}`);
}

// ---- the URL holds the search (mode, q, id, k, calib) so it can be bookmarked and shared
function saveToUrl(search) {
  const params = new URLSearchParams({ mode: search.mode });
  if (search.q) params.set("q", search.q);
  if (search.id !== undefined && search.id !== null && !search.file) params.set("id", String(search.id));
  params.set("k", String(search.k));
  if (search.calib) params.set("calib", "1");
  const url = `?${params}`;
  if (url !== location.search) history.pushState(null, "", url);
}

function setK(value) {
  const select = $("k");
  if (![...select.options].some((o) => o.value === String(value))) select.add(new Option(String(value)));
  select.value = String(value);
}

function restoreFromUrl() {
  const params = new URLSearchParams(location.search);
  const mode = params.get("mode");
  const kParam = parseInt(params.get("k"), 10);
  if (kParam > 0) setK(kParam);
  $("calib").checked = params.get("calib") === "1" && !$("calib").disabled;
  const q = params.get("q") || "";
  const id = parseInt(params.get("id"), 10);
  if (mode === "text" && q.trim()) {
    $("query").value = q;
    runSearch(textSearch(q), { push: false });
  } else if (mode === "similar" && id >= 0) {
    $("query").value = "";
    runSearch({ mode: "similar", id, name: `image #${id}`, k: k() }, { push: false });
  } else if (mode === "composed" && id >= 0 && q.trim()) {
    useAsReference(id, `/images/${id}?thumb=1`, `image #${id}`, false);
    $("mod-text").value = q;
    runSearch({ mode: "composed", id, q, name: `image #${id}`, k: k(), calib: $("calib").checked }, { push: false });
  } else {
    $("query").value = "";
    clearResults();
    setStatus("");
  }
}

function k() { return parseInt($("k").value, 10); }

function textSearch(q) { return { mode: "text", q, k: k(), calib: $("calib").checked }; }

function searchText() {
  const query = $("query").value.trim();
  if (!query) {
    setStatus("type what you are looking for, e.g. “a red car on a beach”", true);
    $("query").focus();
    return;
  }
  runSearch(textSearch(query));
}

function reference() {
  if (state.refFile) return { file: state.refFile, name: state.refFile.name || "the uploaded image" };
  if (state.refId !== null) return { id: state.refId, name: state.refName };
  return null;
}

function searchSimilar(id, name) {
  $("query").value = "";  // the text box no longer describes what is shown
  runSearch({ mode: "similar", id, name, k: k() });
}

function searchReference() {
  const ref = reference();
  if (!ref) { setStatus("choose a reference image first", true); return; }
  $("query").value = "";
  runSearch({ mode: "similar", ...ref, k: k() });
}

function searchComposed() {
  const ref = reference();
  if (!ref) { setStatus("choose a reference image first", true); return; }
  const text = $("mod-text").value.trim();
  if (!text) { setStatus("say how the reference should change", true); return; }
  $("query").value = "";
  runSearch({ mode: "composed", ...ref, q: text, k: k(), calib: $("calib").checked });
}

// CalibCLIP or k changed: the results on screen no longer match the controls, so search again
function rerun() {
  const last = state.last;
  if (!last) return;
  if (last.mode !== "similar") last.calib = $("calib").checked;
  runSearch({ ...last, k: k() });
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
  clearResults();  // the grid showed results for another reference (or query)
  setStatus(`reference: ${file.name} — now “Similar images”, or describe a change and “Composed search”`);
}

function useAsReference(id, thumb, name, announce = true) {
  state.refFile = null;
  state.refId = id;
  state.refName = name;
  loadImage($("ref-preview"), thumb);
  showReference(name);
  if (!announce) return;
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
  $("calib").addEventListener("change", rerun);
  $("k").addEventListener("change", rerun);
  $("more").addEventListener("click", () => { if (state.last) runSearch(state.last, { append: true, push: false }); });
  window.addEventListener("popstate", restoreFromUrl);
  $("key-button").addEventListener("click", showKeyPanel);
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("key-input").value.trim();
    if (state.key) localStorage.setItem(KEY_STORE, state.key); else localStorage.removeItem(KEY_STORE);
    $("key-panel").hidden = true;
    start();
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

async function start() {
  if (await refreshStats()) restoreFromUrl();
}

wire();
start();
