// imgpress web: plain JS, no build step. The form is built from GET api/codecs (the registry).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const SETTINGS = ["A", "B"];
const state = {
  codecs: [],          // [{name, description, extension, params: [{name, kind, default, min, max, help, choices}]}]
  postfilters: [],     // [{name, id, description}]: the shipped post-filters (--postfilter)
  limits: {},
  fullScale: 32,
  images: [],          // upload infos, in upload order
  selected: null,      // image id
  results: {},         // image id -> {A: result, B: result}
  remembered: {},      // "A:codec" -> {param: value}: switching codecs back keeps what was typed
  view: { left: "original", right: "A" },  // what each side of the split shows
  zoom: "fit",
  split: 0.5,
};

// ------------------------------------------------------------------ small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function fmtBytes(n) {
  return Number(n).toLocaleString("en-US");
}
function fmtSize(n) {
  return n >= 2 ** 20 ? `${+(n / 2 ** 20).toFixed(1)} MiB` : `${fmtBytes(n)} bytes`;
}
function fmtPsnr(v) {
  return v === "inf" ? "∞ (lossless)" : Number(v).toFixed(2);
}
function fmtNum(v, digits) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
}
function paramsText(params) {
  return Object.entries(params || {})
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${v}`).join(" ");
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error(`the server did not answer (${err.message}); is imgpress web still running?`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const msg = body && (body.error || body.detail);
    throw new Error(typeof msg === "string" ? msg : `the server answered ${response.status} ${response.statusText}`);
  }
  return body;
}

function showMessage(lines) {
  const box = $("#message");
  box.replaceChildren(...lines.map((t) => el("p", { text: t })));
  box.hidden = lines.length === 0;
}
let messages = [];
function addMessage(text) {
  messages.push(text);
  showMessage(messages);
}
function clearMessages() {
  messages = [];
  showMessage(messages);
}

function setBusy(text) {
  document.body.dataset.busy = text ? "true" : "false";
  $("#status").textContent = text || "ready";
  $("#run").disabled = Boolean(text);
}

// ------------------------------------------------------------------ the settings form

function buildSetting(letter) {
  const box = $(`#setting-${letter}`);
  const select = el("select", { name: "codec", "aria-label": `codec of setting ${letter}`,
                                onchange: () => buildParams(letter) });
  for (const c of state.codecs) select.append(el("option", { value: c.name, text: c.name }));
  // The run option --postfilter: a shipped filter restores the decoded image before it is measured.
  const filter = el("select", { name: "postfilter", "aria-label": `post-filter of setting ${letter}` });
  filter.append(el("option", { value: "", text: "none" }));
  for (const f of state.postfilters) {
    filter.append(el("option", { value: f.name, text: `${f.name} (${f.description})` }));
  }
  box.replaceChildren(
    el("h2", { text: `Setting ${letter}` }),
    el("label", { class: "codec" }, "codec ", select),
    el("p", { class: "help codec-help" }),
    el("div", { class: "params" }),
    el("label", { class: "postfilter" }, "post-filter ", filter),
  );
  buildParams(letter);
}

function codecOf(letter) {
  const name = $(`#setting-${letter} select[name=codec]`).value;
  return state.codecs.find((c) => c.name === name);
}

function buildParams(letter) {
  const box = $(`#setting-${letter}`);
  const codec = codecOf(letter);
  box.querySelector(".codec-help").textContent = codec ? codec.description : "";
  const params = box.querySelector(".params");
  params.replaceChildren();
  if (!codec) return;
  const remembered = state.remembered[`${letter}:${codec.name}`] || {};
  for (const p of codec.params) params.append(paramField(letter, p, remembered[p.name]));
  if (!codec.params.length) params.append(el("p", { class: "help", text: "this codec takes no parameters" }));
}

function paramField(letter, p, remembered) {
  const id = `${letter}-${p.name}`;
  const value = remembered !== undefined ? remembered : p.default;
  // Only parameters the user set are sent (as on the command line): the codec fills in the
  // rest, so e.g. a target PSNR alone searches the whole quality range.
  const given = remembered !== undefined && String(remembered ?? "") !== String(p.default ?? "");
  const common = { id, name: p.name, "data-param": p.name, "data-kind": p.kind, "data-set": given ? "1" : null,
                   onchange: () => remember(letter), oninput: (e) => { e.target.dataset.set = "1"; }, title: p.help };
  const wrap = el("div", { class: "param" });
  const label = el("label", { for: id, text: p.name.replace(/_/g, " ") });
  let input;
  if (p.choices) {
    input = el("select", common);
    if (p.default === null) input.append(el("option", { value: "", text: "(auto)" }));
    for (const c of p.choices) input.append(el("option", { value: c, text: c }));
    input.value = value === null ? "" : String(value);
  } else if (p.kind === "bool") {
    input = el("input", { ...common, type: "checkbox" });
    input.checked = Boolean(value);
  } else if ((p.kind === "int" || p.kind === "float") && p.keywords) {
    // a number or one of the parameter's words: free text with the words offered
    const list = el("datalist", { id: `${id}-words` }, ...p.keywords.map((w) => el("option", { value: w })));
    input = el("input", { ...common, type: "text", list: list.id, spellcheck: "false",
                          "data-keywords": p.keywords.join(" "), placeholder: p.default === null ? "auto" : null });
    input.value = value === null || value === undefined ? "" : String(value);
    wrap.append(label, el("div", { class: "inputs" }, input, list));
  } else if (p.kind === "int" || p.kind === "float") {
    input = el("input", {
      ...common, type: "number", min: p.min, max: p.max, step: p.kind === "int" ? 1 : "any",
      placeholder: p.default === null ? "auto" : null, inputmode: p.kind === "int" ? "numeric" : "decimal",
    });
    input.value = value === null || value === undefined ? "" : String(value);
    if (p.kind === "int" && p.min !== null && p.max !== null && p.max - p.min <= 1000) {
      const range = el("input", { type: "range", min: p.min, max: p.max, step: 1, "aria-label": `${p.name} slider`,
                                  class: "slider" });
      range.value = input.value === "" ? (p.min + p.max) / 2 : input.value;
      range.classList.toggle("unset", input.value === "");
      range.addEventListener("input", () => {
        input.value = range.value;
        input.dataset.set = "1";
        range.classList.remove("unset");
      });
      range.addEventListener("change", () => remember(letter));
      input.addEventListener("input", () => {
        range.classList.toggle("unset", input.value === "");
        if (input.value !== "") range.value = input.value;
      });
      wrap.append(label, el("div", { class: "inputs" }, range, input));
    }
  } else {
    input = el("input", { ...common, type: "text", spellcheck: "false" });
    input.value = value === null || value === undefined ? "" : String(value);
  }
  if (!wrap.childElementCount) wrap.append(label, el("div", { class: "inputs" }, input));
  const bounds = p.min !== null && p.max !== null ? ` (${p.min} … ${p.max})` : "";
  wrap.append(el("small", { class: "help", text: p.help + bounds }));
  return wrap;
}

function remember(letter) {
  const codec = codecOf(letter);
  if (codec) state.remembered[`${letter}:${codec.name}`] = readParams(letter, true);
}

function readParams(letter, raw = false) {
  const out = {};
  for (const input of $(`#setting-${letter}`).querySelectorAll("[data-param]")) {
    const kind = input.dataset.kind;
    if (!raw && input.dataset.set !== "1") continue;
    let v;
    if (kind === "bool") v = input.checked;
    else if (input.value.trim() === "") v = null;
    else if (raw) v = input.value;
    else if (input.dataset.keywords && input.dataset.keywords.split(" ").includes(input.value.trim())) {
      v = input.value.trim();
    } else if (kind === "int" || kind === "float") {
      v = Number(input.value);
      if (!Number.isFinite(v) || (kind === "int" && !Number.isInteger(v))) {
        throw new Error(`setting ${letter}: ${input.dataset.param} must be ${kind === "int" ? "a whole number" : "a number"}`);
      }
    } else v = input.value.trim();
    out[input.dataset.param] = v;
  }
  return out;
}

function activeSettings() {
  return $("#compare").checked ? SETTINGS : ["A"];
}

// ------------------------------------------------------------------ uploads

async function uploadFiles(files) {
  clearMessages();
  const added = [];
  const limit = state.limits.max_upload_bytes;
  let i = 0;
  for (const file of files) {
    i += 1;
    setBusy(`uploading ${file.name} (${i}/${files.length})…`);
    if (limit && file.size > limit) {
      addMessage(`${file.name}: ${fmtBytes(file.size)} bytes is over this server's limit of ${fmtBytes(limit)}`);
      continue;
    }
    try {
      const info = await api("api/images", {
        method: "POST",
        headers: { "Content-Type": "application/octet-stream", "X-Filename": encodeURIComponent(file.name) },
        body: file,
      });
      state.images.push(info);
      added.push(info);
    } catch (err) {
      addMessage(err.message);
    }
  }
  setBusy(null);
  if (added.length) {
    state.selected = added[0].id;
    renderImages();
    await compress(added.map((x) => x.id));
  }
  renderImages();
}

function renderImages() {
  const list = $("#images");
  list.replaceChildren(...state.images.map((img) => {
    const li = el("li", { class: img.id === state.selected ? "selected" : null, tabindex: 0, "data-image": img.id,
                          onclick: () => select(img.id),
                          onkeydown: (e) => { if (e.key === "Enter") select(img.id); } },
      el("span", { class: "name", text: img.name }),
      el("span", { class: "meta", text: `${img.width}×${img.height}, ${img.channels === 1 ? "gray" : "RGB"}, ${img.format}, ${fmtBytes(img.bytes)} B` }),
      img.conversion ? el("span", { class: "meta conv", text: img.conversion.replace(/;/g, " · ") }) : null);
    return li;
  }));
}

function select(id) {
  state.selected = id;
  renderImages();
  renderView();
  renderMetrics();
}

// ------------------------------------------------------------------ compressing

async function compress(imageIds) {
  let settings;
  try {
    settings = activeSettings().map((letter) => ({
      letter, codec: codecOf(letter).name, params: readParams(letter),
      postfilter: $(`#setting-${letter} select[name=postfilter]`).value || null,
    }));
  } catch (err) {
    addMessage(err.message);
    return;
  }
  const jobs = [];
  for (const id of imageIds) for (const s of settings) jobs.push({ id, ...s });
  let done = 0;
  for (const job of jobs) {
    const img = state.images.find((x) => x.id === job.id);
    setBusy(`compressing ${img.name} with ${job.codec} (${done + 1}/${jobs.length})…`);
    try {
      const result = await api(`api/images/${job.id}/compress`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ codec: job.codec, params: job.params, postfilter: job.postfilter }),
      });
      (state.results[job.id] = state.results[job.id] || {})[job.letter] = result;
    } catch (err) {
      addMessage(`setting ${job.letter}: ${err.message}`);
      if (state.results[job.id]) delete state.results[job.id][job.letter];
    }
    done += 1;
  }
  setBusy(null);
  document.body.dataset.runs = String(Number(document.body.dataset.runs) + 1);
  renderView();
  renderMetrics();
  renderResults();
}

function runClicked() {
  clearMessages();
  if (!state.images.length) {
    addMessage("upload an image first");
    return;
  }
  const ids = $("#all-images").checked ? state.images.map((x) => x.id) : [state.selected];
  compress(ids);
}

// ------------------------------------------------------------------ metrics

const METRICS = [
  ["codec", "codec", (r) => r.codec],
  ["params", "parameters", (r) => paramsText(r.params)],
  ["decision", "codec chose", (r) => paramsText({ ...(r.decision || {}), route: r.route }) || "–"],
  ["postfilter", "post-filter", (r) => (r.postfilter ? `${r.postfilter} (${fmtNum(r.postfilter_ms, 1)} ms)` : "none")],
  ["psnr", "PSNR dB", (r) => fmtPsnr(r.psnr)],
  ["ssim", "SSIM", (r) => fmtNum(r.ssim, 4)],
  ["bpp", "bits per pixel", (r) => fmtNum(r.bpp, 3)],
  ["artifact_bytes", "bytes", (r) => fmtBytes(r.artifact_bytes)],
  ["compression_ratio", "ratio (file / artifact)", (r) => `${fmtNum(r.compression_ratio, 2)}×`],
  ["raw_compression_ratio", "ratio (raw pixels / artifact)", (r) => `${fmtNum(r.raw_compression_ratio, 2)}×`],
  ["encode_ms", "encode ms", (r) => fmtNum(r.encode_ms, 1)],
  ["decode_ms", "decode ms", (r) => fmtNum(r.decode_ms, 1)],
];

function downloads(r) {
  return el("span", { class: "downloads" },
    el("a", { href: r.artifact, download: r.artifact_name, "data-download": "artifact",
              title: r.artifact_name, text: `artifact (${r.extension})` }),
    " ",
    el("a", { href: r.decoded, download: r.decoded_name, "data-download": "decoded",
              title: r.decoded_name, text: "decoded PNG" }));
}

// With two results, mark the better value of each quality and size metric.
const HIGHER_IS_BETTER = { psnr: true, ssim: true, compression_ratio: true, raw_compression_ratio: true,
                           bpp: false, artifact_bytes: false };
function better(res, key, letter) {
  if (!(key in HIGHER_IS_BETTER) || !res.A || !res.B || !$("#compare").checked) return false;
  const value = (r) => (r[key] === "inf" ? Infinity : Number(r[key]));
  const mine = value(res[letter]);
  const other = value(res[letter === "A" ? "B" : "A"]);
  return HIGHER_IS_BETTER[key] ? mine > other : mine < other;
}

function renderMetrics() {
  const res = state.results[state.selected] || {};
  const table = $("#metrics");
  const letters = activeSettings();
  for (const th of table.querySelectorAll("thead th[data-setting]")) th.hidden = !letters.includes(th.dataset.setting);
  const rows = METRICS.map(([key, label, fmt]) => el("tr", { "data-metric-row": key },
    el("th", { scope: "row", text: label }),
    ...letters.map((L) => el("td", { "data-setting": L, "data-metric": key, class: better(res, key, L) ? "better" : null,
                                     text: res[L] ? fmt(res[L]) : "–" }))));
  rows.push(el("tr", {}, el("th", { scope: "row", text: "download" }),
    ...letters.map((L) => el("td", { "data-setting": L, "data-metric": "download" }, res[L] ? downloads(res[L]) : "–"))));
  table.querySelector("tbody").replaceChildren(...rows);
}

function renderResults() {
  const rows = [];
  for (const img of state.images) {
    for (const L of SETTINGS) {
      const r = (state.results[img.id] || {})[L];
      if (!r) continue;
      rows.push(el("tr", { onclick: () => select(img.id), class: img.id === state.selected ? "selected" : null },
        el("td", { text: img.name }), el("td", { text: L }), el("td", { text: r.codec }),
        el("td", { text: paramsText(r.params) }), el("td", { text: fmtPsnr(r.psnr) }),
        el("td", { text: fmtNum(r.ssim, 4) }), el("td", { text: fmtNum(r.bpp, 3) }),
        el("td", { text: fmtBytes(r.artifact_bytes) }), el("td", { text: `${fmtNum(r.compression_ratio, 2)}×` }),
        el("td", { text: fmtNum(r.encode_ms, 1) }), el("td", { text: fmtNum(r.decode_ms, 1) }),
        el("td", {}, downloads(r))));
    }
  }
  $("#results tbody").replaceChildren(...rows);
}

// ------------------------------------------------------------------ the viewer

function sources() {
  const img = state.images.find((x) => x.id === state.selected);
  if (!img) return {};
  const res = state.results[img.id] || {};
  const out = { original: { url: img.original, label: `original · ${img.name}` } };
  for (const L of SETTINGS) {
    const r = res[L];
    if (!r) continue;
    const what = `${r.codec} ${paramsText(r.params)}`.trim();
    out[L] = { url: r.decoded, label: `${L} · ${what} · ${fmtPsnr(r.psnr)} dB` };
    out[`err${L}`] = { url: r.error_map, label: `error map ${L} · ${what}` };
  }
  return out;
}

const SOURCE_NAMES = { original: "original", A: "A decoded", B: "B decoded", errA: "A error map", errB: "B error map" };

function renderView() {
  const src = sources();
  const img = state.images.find((x) => x.id === state.selected);
  for (const side of ["left", "right"]) {  // the user's choice, or the nearest available source
    const sel = $(`#${side}`);
    const wanted = state.view[side];
    sel.replaceChildren(...Object.entries(SOURCE_NAMES).map(([k, label]) =>
      el("option", { value: k, text: label, disabled: !src[k] })));
    sel.value = [wanted, wanted.replace("err", ""), "A", "B", "original"].find((k) => src[k]) || "original";
  }
  $("#empty").hidden = Boolean(img);
  $("#stage").hidden = !img;
  $("#split").hidden = !img;
  const left = src[$("#left").value];
  const right = src[$("#right").value];
  setImage($("#img-left"), left);
  setImage($("#img-right"), right);
  $("#tag-left").textContent = left ? left.label : "";
  $("#tag-right").textContent = right ? right.label : "";
  $("#legend").hidden = !["errA", "errB"].some((k) => [$("#left").value, $("#right").value].includes(k));
  layout();
}

function setImage(node, source) {
  const url = source ? source.url : "";
  if (node.getAttribute("src") !== url) {
    if (url) node.setAttribute("src", url);
    else node.removeAttribute("src");
  }
}

function scale() {
  const img = state.images.find((x) => x.id === state.selected);
  if (!img) return 1;
  if (state.zoom !== "fit") return Number(state.zoom);
  const v = $("#viewer");
  return Math.min(v.clientWidth / img.width, v.clientHeight / img.height);
}

function layout() {
  const img = state.images.find((x) => x.id === state.selected);
  const stage = $("#stage");
  if (!img) return;
  const s = scale();
  stage.style.width = `${Math.max(1, Math.round(img.width * s))}px`;
  stage.style.height = `${Math.max(1, Math.round(img.height * s))}px`;
  stage.classList.toggle("pixelated", s >= 2);
  updateSplit();
}

function updateSplit() {
  const v = $("#viewer");
  const stage = $("#stage");
  const x = state.split * v.clientWidth;
  $("#split").style.left = `${x}px`;
  $("#split").setAttribute("aria-valuenow", String(Math.round(state.split * 100)));
  const clip = Math.max(0, v.scrollLeft + x - stage.offsetLeft);
  $("#img-right").style.clipPath = `inset(0 0 0 ${clip}px)`;
}

function setZoom(z, anchor) {
  const v = $("#viewer");
  const before = scale();
  const ax = anchor ? anchor.x : v.clientWidth / 2;
  const ay = anchor ? anchor.y : v.clientHeight / 2;
  const stage = $("#stage");
  const px = (v.scrollLeft + ax - stage.offsetLeft) / before;  // image pixel under the anchor
  const py = (v.scrollTop + ay - stage.offsetTop) / before;
  state.zoom = z;
  $("#zoom").value = z;
  layout();
  const after = scale();
  v.scrollLeft = px * after + stage.offsetLeft - ax;
  v.scrollTop = py * after + stage.offsetTop - ay;
  updateSplit();
}

const ZOOMS = ["0.5", "1", "2", "4", "8", "16"];
function stepZoom(dir, anchor) {
  const s = scale();
  const next = dir > 0 ? ZOOMS.find((z) => Number(z) > s + 1e-9) : [...ZOOMS].reverse().find((z) => Number(z) < s - 1e-9);
  if (next) setZoom(next, anchor);
}

function initViewer() {
  const v = $("#viewer");
  const split = $("#split");
  const moveSplit = (clientX) => {
    const r = v.getBoundingClientRect();
    state.split = Math.min(1, Math.max(0, (clientX - r.left) / v.clientWidth));
    updateSplit();
  };
  split.addEventListener("pointerdown", (e) => {
    split.setPointerCapture(e.pointerId);
    split.classList.add("dragging");
    moveSplit(e.clientX);
    e.preventDefault();
  });
  split.addEventListener("pointermove", (e) => { if (split.hasPointerCapture(e.pointerId)) moveSplit(e.clientX); });
  split.addEventListener("pointerup", (e) => { split.releasePointerCapture(e.pointerId); split.classList.remove("dragging"); });
  split.addEventListener("keydown", (e) => {
    const step = e.shiftKey ? 0.1 : 0.02;
    if (e.key === "ArrowLeft") state.split = Math.max(0, state.split - step);
    else if (e.key === "ArrowRight") state.split = Math.min(1, state.split + step);
    else return;
    e.preventDefault();
    updateSplit();
  });
  // Pan by dragging the image.
  let pan = null;
  v.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || e.offsetX >= v.clientWidth || e.offsetY >= v.clientHeight) return;  // scrollbars
    pan = { x: e.clientX, y: e.clientY, left: v.scrollLeft, top: v.scrollTop, id: e.pointerId };
    v.setPointerCapture(e.pointerId);
    v.classList.add("panning");
  });
  v.addEventListener("pointermove", (e) => {
    if (!pan || pan.id !== e.pointerId) return;
    v.scrollLeft = pan.left - (e.clientX - pan.x);
    v.scrollTop = pan.top - (e.clientY - pan.y);
  });
  const endPan = () => { pan = null; v.classList.remove("panning"); };
  v.addEventListener("pointerup", endPan);
  v.addEventListener("pointercancel", endPan);
  v.addEventListener("scroll", updateSplit);
  v.addEventListener("wheel", (e) => {
    if (!e.ctrlKey) return;
    e.preventDefault();
    const r = v.getBoundingClientRect();
    stepZoom(e.deltaY < 0 ? 1 : -1, { x: e.clientX - r.left, y: e.clientY - r.top });
  }, { passive: false });
  window.addEventListener("resize", layout);
  $("#zoom").addEventListener("change", (e) => setZoom(e.target.value));
  $("#zoom-in").addEventListener("click", () => stepZoom(1));
  $("#zoom-out").addEventListener("click", () => stepZoom(-1));
  for (const side of ["left", "right"]) {
    $(`#${side}`).addEventListener("change", (e) => { state.view[side] = e.target.value; renderView(); });
  }
}

// ------------------------------------------------------------------ start

function initUploads() {
  const input = $("#files");
  input.addEventListener("change", () => {
    const files = [...input.files];
    input.value = "";
    if (files.length) uploadFiles(files);
  });
  const drop = $("#drop");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const files = [...(e.dataTransfer ? e.dataTransfer.files : [])];
    if (files.length) uploadFiles(files);
  });
  // A file dropped next to the drop zone should not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

async function start() {
  initViewer();
  initUploads();
  $("#run").addEventListener("click", runClicked);
  $("#compare").addEventListener("change", () => {
    const on = $("#compare").checked;
    $("#setting-B").hidden = !on;
    if (on && !$("#setting-B").dataset.touched) {  // start B as a copy of A: change one thing and compare
      $("#setting-B select[name=codec]").value = codecOf("A").name;
      $("#setting-B select[name=postfilter]").value = $("#setting-A select[name=postfilter]").value;
      state.remembered[`B:${codecOf("A").name}`] = readParams("A", true);
      buildParams("B");
      $("#setting-B").dataset.touched = "1";
    }
    renderMetrics();
  });
  for (const L of SETTINGS) {
    $(`#setting-${L}`).addEventListener("keydown", (e) => {
      if (e.key === "Enter" && e.target.matches("input")) runClicked();
    });
  }
  let info;
  try {
    info = await api("api/codecs");
    state.codecs = info.codecs;
    state.postfilters = info.postfilters || [];
    state.limits = info.limits;
    state.fullScale = info.error_map_full_scale;
  } catch (err) {
    addMessage(`cannot load the codecs: ${err.message}`);
    setBusy("offline");
    return;
  }
  $("#full-scale").textContent = String(state.fullScale);
  $("#limits").textContent = `up to ${fmtSize(state.limits.max_upload_bytes)} and `
    + `${(state.limits.max_pixels / 1e6).toLocaleString("en-US")} megapixels per image`;
  for (const L of SETTINGS) {
    buildSetting(L);
    if (state.codecs.some((c) => c.name === info.default_codec)) {
      $(`#setting-${L} select[name=codec]`).value = info.default_codec;
      buildParams(L);
    }
  }
  renderView();
  renderMetrics();
  setBusy(null);
}

document.addEventListener("DOMContentLoaded", start);
