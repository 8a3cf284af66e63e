// uscl serve: upload one file, follow its job, show what `uscl predict` made of it. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
let MODEL = null;
let busy = false;

function el(tag, attrs = {}, text = null) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  return e;
}

function fmtBytes(n) {
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} kB`;
}

function showError(message, status) {
  const box = $("error");
  box.replaceChildren(el("strong", {}, status ? `Error ${status}` : "Error"), document.createTextNode(message));
  box.hidden = false;
  $("progress-box").hidden = true;
}

function setStatus(text, fraction) {
  $("progress-box").hidden = false;
  $("status").textContent = text;
  const bar = $("progress");
  if (fraction === null || fraction === undefined) bar.removeAttribute("value");  // indeterminate
  else bar.value = Math.max(0, Math.min(1, fraction));
}

async function loadModel() {
  try {
    const r = await fetch("/api/model");
    MODEL = await r.json();
    $("model-info").textContent = `${MODEL.task_name} model: ${MODEL.description} · device ${MODEL.device}`;
    $("limits").textContent = `videos, DICOM or images (${MODEL.extensions.join(" ")}), at most `
      + `${fmtBytes(MODEL.max_upload_bytes)}`;
  } catch (e) {
    $("model-info").textContent = "the server does not answer";
  }
  for (const s of document.querySelectorAll(".origin")) s.textContent = location.origin;
}

function upload(file) {
  if (busy) return;
  $("error").hidden = true;
  $("result").hidden = true;
  if (MODEL && file.size > MODEL.max_upload_bytes) {
    showError(`${file.name} is ${fmtBytes(file.size)}, over the upload limit of ${fmtBytes(MODEL.max_upload_bytes)}`, 413);
    return;
  }
  busy = true;
  const form = new FormData();
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/jobs");
  xhr.upload.onprogress = (ev) => {
    if (ev.lengthComputable) setStatus(`uploading ${file.name}: ${fmtBytes(ev.loaded)} of ${fmtBytes(ev.total)}`,
                                       ev.loaded / ev.total);
  };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { body = { detail: xhr.responseText }; }
    if (xhr.status >= 400) { busy = false; showError(body.detail || xhr.statusText, xhr.status); return; }
    poll(body.id);
  };
  xhr.onerror = () => { busy = false; showError("the upload failed: the server closed the connection"); };
  setStatus(`uploading ${file.name}`, 0);
  xhr.send(form);
}

function describe(job) {
  if (job.status === "queued") return [`waiting in the queue (position ${job.position})`, null];
  const frames = job.frames_total ? ` ${job.frames_done} of ${job.frames_total} frames`
    : job.frames_done ? ` ${job.frames_done} frames` : "";
  const frac = job.frames_total ? job.frames_done / job.frames_total : null;
  return [`${job.input}: ${job.stage}${frames} (${job.seconds.toFixed(1)} s)`, frac];
}

async function poll(id) {
  try {
    const r = await fetch(`/api/jobs/${id}`);
    const job = await r.json();
    if (r.status >= 400 || job.status === "failed") {
      busy = false;
      showError(job.error || job.detail || r.statusText, r.status);
      return;
    }
    if (job.status === "done") {
      busy = false;
      $("progress-box").hidden = true;
      render(job);
      return;
    }
    const [text, frac] = describe(job);
    setStatus(text, frac);
  } catch (e) {
    setStatus("waiting for the server…", null);
  }
  setTimeout(() => poll(id), 300);
}

function bars(rows) {
  // rows: [{label, value (0..1), text, top, colour}]
  const box = el("div", { class: "bars", id: "probabilities" });
  for (const r of rows) {
    const name = el("span", { class: "bar-label" });
    if (r.colour) name.append(el("span", { class: "swatch", style: `background:${r.colour}` }));
    name.append(document.createTextNode(r.label));
    const bar = el("div", { class: "bar" + (r.top ? " top" : "") });
    bar.append(el("span", { style: `width:${(100 * Math.max(0, Math.min(1, r.value))).toFixed(1)}%` }));
    box.append(name, bar, el("span", { class: "num" }, r.text));
  }
  return box;
}

function summaryClassify(item) {
  const out = [];
  const head = el("p");
  head.append("prediction: ", el("span", { id: "predicted-class" }, item.prediction),
    ` · ${Math.round(100 * item.agreement)}% of ${item.num_frames} frame(s) agree`);
  out.push(head);
  const rows = Object.entries(item.probabilities).map(([c, p]) => (
    { label: c, value: p, text: p.toFixed(3), top: c === item.prediction }));
  out.push(bars(rows));
  return out;
}

function summaryDense(item, result) {
  const seg = result.format === "uscl-segmentations";
  const colours = result.legend || {};
  const found = Object.entries(item.classes).filter(([, v]) => v.present_frames > 0).map(([c]) => c);
  const head = el("p");
  head.append(seg ? "mask classes found: " : "detected: ",
    el("span", { id: "predicted-class" }, found.length ? found.join(", ") : "none"),
    ` · ${item.num_frames} frame(s)`);
  const rows = Object.entries(item.classes).map(([c, v]) => ({
    label: c, value: v.present_frames, colour: (colours[c] || {}).colour,
    text: seg ? `${(100 * v.mean_fraction).toFixed(1)}%` : `${v.detections}`,
  }));
  const note = el("p", { class: "muted small" }, seg
    ? "bar: share of frames where the class is present; number: its mean share of the frame"
    : "bar: share of frames with a detection of the class; number: detections in all frames");
  return [head, bars(rows), note];
}

function showImage(boxId, imgId, url) {
  $(boxId).hidden = !url;
  if (url) $(imgId).src = `${url}?t=${Date.now()}`;
}

function render(job) {
  const result = job.result;
  const item = result.inputs[0];
  $("input-name").textContent = `${job.input} (${job.kind}, ${item.num_frames} frame(s))`;
  const dense = result.format !== "uscl-predictions";
  $("summary").replaceChildren(...(dense ? summaryDense(item, result) : summaryClassify(item)));
  const f = job.files;
  const overlay = f["overlay.gif"] || f["overlay.png"];
  showImage("overlay-box", "overlay-img", overlay);
  $("overlay-caption").textContent = dense ? (result.format === "uscl-segmentations"
    ? "mask overlay" : "detections") : `Grad-CAM of '${result.explain ? result.explain.inputs[0].class : ""}'`;
  showImage("plot-box", "plot-img", f["plot.png"]);
  showImage("sheet-box", "sheet-img", f["sheet.png"]);
  const links = $("downloads");
  links.replaceChildren("download: ");
  const ids = { "predictions.json": "download-json", "frames.csv": "download-csv", "segments.csv": "download-csv",
    "detections.csv": "download-csv", "videos.csv": "download-videos-csv", "overlay.mp4": "download-mp4" };
  for (const name of Object.keys(ids)) {
    if (f[name]) links.append(el("a", { href: f[name], id: ids[name], download: "" }, name));
  }
  $("result").hidden = false;
}

function setup() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (ev) => {
    if (ev.target.files.length) upload(ev.target.files[0]);
    ev.target.value = "";
  });
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    if (ev.dataTransfer.files.length) upload(ev.dataTransfer.files[0]);
  });
  loadModel();
}

setup();
