// veil review: the reviewer's page. Talks to the JSON API of veil/review/_server.py; nothing is
// fetched from anywhere else. Every change is a request carrying the session's token.
"use strict";

const TOKEN = document.querySelector('meta[name="veil-token"]').content;
const COLOURS = {
  detected: "#2563eb", interpolated: "#f59e0b", extrapolated: "#93c5fd", followed: "#0d9488",
  manual: "#7c3aed", policy: "#dc2626", suppressed: "#9ca3af",
};
const $ = (id) => document.getElementById(id);

let state = null;
let frame = 0;
let view = "original";
let masks = [];
let drawing = false;      // the box tool is on
let dragFrom = null;      // where a drag started, in picture pixels
let dragTo = null;
let keyframes = [];       // boxes drawn, {frame, box}, not yet saved
let pending = 0;          // requests in flight (body[data-busy] for people and tests)
let settle = null;        // ends the wait for the picture being loaded
let shows = 0;            // calls of show(): only the latest one's picture counts

function busy(delta) {
  pending += delta;
  document.body.dataset.busy = pending > 0 ? "1" : "0";
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(path, body) {
  busy(1);
  try {
    const options = { headers: { "X-Veil-Token": TOKEN } };
    if (body !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    const data = await response.json();
    if (!response.ok) {
      const error = new Error(data.error || response.statusText);
      error.status = response.status;
      error.data = data;
      throw error;
    }
    return data;
  } finally {
    busy(-1);
  }
}

function who() {
  const name = $("who").value.trim();
  if (!name) {
    say("Give your name as reviewer first (top right)", true);
    $("who").focus();
    return null;
  }
  localStorage.setItem("veil-reviewer", name);
  return name;
}

// -- a question for the reviewer -----------------------------------------------------------

function ask(text, fields) {
  // fields: [{name, label, value}]; resolves to {name: value}, or null when cancelled
  return new Promise((resolve) => {
    const dialog = $("ask");
    $("askText").textContent = text;
    const holder = $("askFields");
    holder.replaceChildren();
    for (const f of fields) {
      const label = document.createElement("label");
      label.textContent = f.label + " ";
      const input = document.createElement("input");
      input.name = f.name;
      input.value = f.value || "";
      label.appendChild(input);
      holder.appendChild(label);
    }
    dialog.onclose = () => {
      if (dialog.returnValue !== "ok") return resolve(null);
      const out = {};
      for (const input of holder.querySelectorAll("input")) out[input.name] = input.value;
      resolve(out);
    };
    dialog.returnValue = "";
    dialog.showModal();
    const first = holder.querySelector("input");
    if (first) first.focus();
  });
}

// -- the frame -------------------------------------------------------------------------------

async function show(index) {
  if (!state) return;
  frame = Math.max(0, Math.min(state.frames - 1, index));
  const call = ++shows;
  $("scrub").value = frame;
  $("frame").value = frame;
  $("time").textContent = (frame / state.fps).toFixed(2) + " s";
  document.body.dataset.frame = frame;
  document.body.dataset.loaded = "0";
  const picture = $("picture");
  if (settle) settle(); // the picture asked for before this one will never load now
  const loaded = new Promise((resolve) => {
    settle = resolve;
    picture.onload = resolve;
    picture.onerror = resolve;
  });
  picture.src = `/api/frame?frame=${frame}&view=${view}&token=${encodeURIComponent(TOKEN)}`;
  busy(1);
  try {
    [masks] = await Promise.all([api(`/api/masks?frame=${frame}`), loaded]);
  } finally {
    busy(-1);
  }
  // an earlier call, settled when this one superseded it, must not say "loaded" while the
  // picture asked for last is still on its way (the same frame asked twice included)
  if (call === shows) {
    document.body.dataset.loaded = "1";
    paint();
    cursor();
  }
}

function scale() {
  const picture = $("picture");
  return picture.clientWidth / (picture.naturalWidth || state.width || 1);
}

function paint() {
  const canvas = $("overlay");
  const picture = $("picture");
  canvas.width = picture.clientWidth;
  canvas.height = picture.clientHeight;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const s = scale();
  ctx.font = "12px system-ui";
  if (view === "original") {
    for (const m of masks) {
      const [x0, y0, x1, y1] = m.box;
      ctx.strokeStyle = COLOURS[m.origin] || "#fff";
      ctx.lineWidth = 2;
      ctx.strokeRect(x0 * s, y0 * s, (x1 - x0) * s, (y1 - y0) * s);
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fillText(`${m.track} ${m.origin} ${m.score.toFixed(2)}`, x0 * s, Math.max(12, y0 * s - 3));
    }
  }
  ctx.setLineDash([6, 4]);
  ctx.strokeStyle = "#a855f7";
  ctx.lineWidth = 2;
  for (const k of keyframes.filter((k) => k.frame === frame)) {
    const [x0, y0, x1, y1] = k.box;
    ctx.strokeRect(x0 * s, y0 * s, (x1 - x0) * s, (y1 - y0) * s);
  }
  if (dragFrom && dragTo) {
    ctx.strokeRect(dragFrom[0] * s, dragFrom[1] * s, (dragTo[0] - dragFrom[0]) * s,
      (dragTo[1] - dragFrom[1]) * s);
  }
}

function point(event) {
  const rect = $("overlay").getBoundingClientRect();
  const s = scale();
  return [(event.clientX - rect.left) / s, (event.clientY - rect.top) / s];
}

function setView(name) {
  view = name;
  for (const radio of document.querySelectorAll('input[name="view"]')) radio.checked = radio.value === name;
  show(frame);
}

// -- the timeline ----------------------------------------------------------------------------

function timeline() {
  const svg = $("timeline");
  const width = svg.clientWidth || 800;
  const lanes = state.tracks.length;
  const height = 34 + lanes * 9;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", height);
  const x = (i) => (i / Math.max(1, state.frames)) * width;
  const parts = [];
  for (const f of state.flags) {
    parts.push(`<rect x="${x(f.first)}" y="2" width="${Math.max(2, x(f.last + 1) - x(f.first))}" height="10" fill="${f.colour}" opacity="${f.reviewed ? 0.3 : 0.9}"><title>${f.reason} ${f.first}-${f.last}</title></rect>`);
  }
  for (const [i, score] of Object.entries(state.near)) {
    parts.push(`<rect x="${x(Number(i))}" y="14" width="2" height="6" fill="#be123c"><title>near miss, frame ${i}, score ${score}</title></rect>`);
  }
  for (const i of state.cuts) {
    parts.push(`<line x1="${x(i)}" x2="${x(i)}" y1="0" y2="${height}" stroke="#111827" stroke-dasharray="2 2"><title>cut at frame ${i}</title></line>`);
  }
  state.tracks.forEach((t, lane) => {
    for (const [a, b] of t.runs) {
      const colour = t.suppressed ? COLOURS.suppressed : t.manual ? COLOURS.manual : COLOURS.detected;
      parts.push(`<rect x="${x(a)}" y="${24 + lane * 9}" width="${Math.max(1, x(b + 1) - x(a))}" height="7" fill="${colour}"><title>track ${t.id}, frames ${a}-${b}</title></rect>`);
    }
  });
  parts.push(`<line id="cursor" class="cursor" x1="0" x2="0" y1="0" y2="${height}"></line>`);
  svg.innerHTML = parts.join("");
}

function cursor() {
  const line = document.getElementById("cursor");
  if (!line) return;
  const width = $("timeline").clientWidth || 800;
  const at = ((frame + 0.5) / state.frames) * width;
  line.setAttribute("x1", at);
  line.setAttribute("x2", at);
}

// -- the lists -------------------------------------------------------------------------------

function text(tag, content, cls) {
  const node = document.createElement(tag);
  node.textContent = content;
  if (cls) node.className = cls;
  return node;
}

function button(label, action) {
  const b = text("button", label);
  b.addEventListener("click", (event) => {
    event.stopPropagation();
    action();
  });
  return b;
}

function lists() {
  const flags = $("flags");
  flags.replaceChildren();
  for (const f of state.flags) {
    const li = document.createElement("li");
    li.className = f.reviewed ? "reviewed" : "";
    li.appendChild(text("span", f.reason, "reason"));
    li.appendChild(text("span", ` frames ${f.first}-${f.last}${f.reviewed ? " (reviewed)" : ""}: `));
    li.appendChild(text("span", f.detail));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(button("Mark reviewed", () => markReviewed(f)));
    li.addEventListener("click", () => show(f.first));
    flags.appendChild(li);
  }
  const tracks = $("tracks");
  tracks.replaceChildren();
  const select = $("boxtrack");
  select.replaceChildren(new Option("new track", ""));
  for (const t of state.tracks) {
    const card = document.createElement("div");
    card.className = "track" + (t.suppressed ? " suppressed" : "");
    card.dataset.track = t.id;
    const thumb = document.createElement("img");
    thumb.alt = `track ${t.id}`;
    thumb.src = `/api/thumb?track=${t.id}&token=${encodeURIComponent(TOKEN)}`;
    thumb.addEventListener("click", () => show(t.best_frame ?? t.first ?? 0));
    card.appendChild(thumb);
    const body = document.createElement("div");
    const range = t.first === null ? "no frames" : `frames ${t.first}-${t.last}`;
    const how = t.manual ? "manual boxes" : `best score ${t.best}`;
    body.appendChild(text("div", `track ${t.id}: ${range}, ${how}` + (t.suppressed ? " (suppressed)" : "")));
    if (!t.suppressed) {
      body.appendChild(button("Suppress", () => suppress(t)));
      body.appendChild(button("Trim", () => trim(t)));
      body.appendChild(button("Extend", () => extend(t)));
      body.appendChild(button("Grow 20 %", () => grow(t)));
      select.appendChild(new Option(`track ${t.id}`, String(t.id)));
    }
    card.appendChild(body);
    tracks.appendChild(card);
  }
  const edits = $("edits");
  edits.replaceChildren();
  for (const e of state.edits) {
    edits.appendChild(text("li", `#${e.id} ${e.what} (${e.who}, ${e.when}): ${e.why}`));
  }
  const rendered = $("rendered");
  rendered.replaceChildren();
  if (state.rendered) {
    const out = state.rendered.output;
    rendered.appendChild(text("div", `${out.name}: sha256 ${out.sha256}, ${out.size} bytes` +
      (state.current ? " (rendered from the record as it is)" : " (STALE: the record changed since; render again)")));
    rendered.appendChild(text("div", `manifest: record sha256 ${state.rendered.record_sha256}` +
      (state.rendered.signature ? `, signed by key ${state.rendered.signature.key_id}` : ", not signed")));
  } else {
    rendered.appendChild(text("div", "not rendered yet"));
  }
  $("sign").disabled = !(state.can_sign && state.current);
  $("sign").title = state.can_sign ? "" : "start the app with --sign-key KEY to sign off";
  const approvals = $("approvals");
  approvals.replaceChildren();
  for (const a of state.approvals) {
    approvals.appendChild(text("li", `approved by ${a.who} at ${a.when}: ${a.statement} (output sha256 ${a.output_sha256.slice(0, 16)}…)`));
  }
}

async function load(newState) {
  state = newState || (await api("/api/state"));
  $("files").textContent = `${state.input} · ${state.record} · ${state.frames} frames`;
  $("scrub").max = state.frames - 1;
  $("frame").max = state.frames - 1;
  timeline();
  lists();
  await show(frame);
}

// -- actions ---------------------------------------------------------------------------------

async function edit(body) {
  const name = who();
  if (!name) return null;
  try {
    const result = await api("/api/edit", { ...body, who: name });
    say(`edit #${result.edit.id} saved to the record`);
    await load(result.state);
    return result;
  } catch (error) {
    if (error.status === 409 && error.data && error.data.warning) throw error;
    say(error.message, true);
    return null;
  }
}

async function suppress(t) {
  const answer = await ask(`Suppress track ${t.id}: its masks are removed from the output. Why is it not a face?`,
    [{ name: "why", label: "reason" }]);
  if (!answer || !answer.why.trim()) return;
  try {
    await edit({ action: "suppress", track: t.id, why: answer.why });
  } catch (error) {
    const again = await ask(`WARNING: ${error.message}`, [{ name: "why", label: "reason", value: answer.why }]);
    if (!again) return;
    try {
      await edit({ action: "suppress", track: t.id, why: again.why, confirm: true });
    } catch (second) {
      say(second.message, true);
    }
  }
}

async function trim(t) {
  const answer = await ask(`Trim track ${t.id}: keep its masks only in these frames.`, [
    { name: "first", label: "first", value: String(t.first) },
    { name: "last", label: "last", value: String(Math.max(t.first, Math.min(frame, t.last))) },
    { name: "why", label: "reason" },
  ]);
  if (answer) await edit({ action: "trim", track: t.id, first: Number(answer.first), last: Number(answer.last), why: answer.why });
}

async function grow(t) {
  const answer = await ask(`Grow every mask of track ${t.id} by 20 %.`, [{ name: "why", label: "reason" }]);
  if (answer) await edit({ action: "grow", track: t.id, factor: 0.2, why: answer.why });
}

function extend(t) {
  $("boxtrack").value = String(t.id);
  setDrawing(true);
  say(`Draw boxes for track ${t.id} on the frames it should reach, then Save boxes`);
}

async function markReviewed(f) {
  const answer = await ask(`Frames ${f.first}-${f.last} (${f.reason}): looked at, nothing to change?`,
    [{ name: "why", label: "what you saw" }]);
  if (answer) await edit({ action: "reviewed", first: f.first, last: f.last, why: answer.why });
}

function setDrawing(on) {
  drawing = on;
  $("draw").textContent = on ? "Drawing: drag on the picture" : "Draw box (B)";
  $("overlay").style.cursor = on ? "crosshair" : "default";
}

function keyframesChanged() {
  $("keyframes").textContent = keyframes.length
    ? `keyframes: ${keyframes.map((k) => k.frame).join(", ")}`
    : "";
  $("saveboxes").disabled = keyframes.length === 0;
  $("clearboxes").disabled = keyframes.length === 0;
  paint();
}

async function saveBoxes() {
  const track = $("boxtrack").value;
  const result = await edit({
    action: "add_boxes",
    keyframes: keyframes.map((k) => ({ frame: k.frame, box: k.box })),
    track: track === "" ? null : Number(track),
    why: $("boxwhy").value,
  });
  if (result) {
    keyframes = [];
    keyframesChanged();
    setDrawing(false);
  }
}

async function render() {
  say("rendering…");
  try {
    const result = await api("/api/render", {});
    say(`rendered ${result.output.name}`);
    await load(result.state);
    if (view === "output") show(frame);
  } catch (error) {
    say(error.message, true);
  }
}

async function signOff() {
  const name = who();
  if (!name) return;
  try {
    const result = await api("/api/signoff", { who: name, statement: $("statement").value });
    say(`signed off by ${result.approval.who}`);
    await load(result.state);
  } catch (error) {
    say(error.message, true);
  }
}

function nextFlag() {
  const after = state.flags.map((f) => f.first).filter((i) => i > frame).sort((a, b) => a - b);
  if (after.length) show(after[0]);
}

// -- wiring ----------------------------------------------------------------------------------

function wire() {
  $("who").value = localStorage.getItem("veil-reviewer") || "";
  $("prev").addEventListener("click", () => show(frame - 1));
  $("next").addEventListener("click", () => show(frame + 1));
  $("scrub").addEventListener("input", (e) => show(Number(e.target.value)));
  $("frame").addEventListener("change", (e) => show(Number(e.target.value)));
  for (const radio of document.querySelectorAll('input[name="view"]')) {
    radio.addEventListener("change", () => setView(radio.value));
  }
  $("draw").addEventListener("click", () => setDrawing(!drawing));
  $("saveboxes").addEventListener("click", saveBoxes);
  $("clearboxes").addEventListener("click", () => {
    keyframes = [];
    keyframesChanged();
  });
  $("render").addEventListener("click", render);
  $("sign").addEventListener("click", signOff);
  $("timeline").addEventListener("click", (event) => {
    const rect = $("timeline").getBoundingClientRect();
    show(Math.floor(((event.clientX - rect.left) / rect.width) * state.frames));
  });
  const overlay = $("overlay");
  overlay.addEventListener("mousedown", (event) => {
    if (!drawing) return;
    dragFrom = point(event);
    dragTo = dragFrom;
  });
  overlay.addEventListener("mousemove", (event) => {
    if (!dragFrom) return;
    dragTo = point(event);
    paint();
  });
  overlay.addEventListener("mouseup", (event) => {
    if (!dragFrom) return;
    const to = point(event);
    const box = [Math.min(dragFrom[0], to[0]), Math.min(dragFrom[1], to[1]),
      Math.max(dragFrom[0], to[0]), Math.max(dragFrom[1], to[1])].map((v) => Math.round(v * 100) / 100);
    dragFrom = dragTo = null;
    if (box[2] - box[0] >= 2 && box[3] - box[1] >= 2) {
      keyframes = keyframes.filter((k) => k.frame !== frame).concat([{ frame, box }]);
      keyframes.sort((a, b) => a.frame - b.frame);
    }
    keyframesChanged();
  });
  window.addEventListener("resize", () => {
    if (state) {
      timeline();
      cursor();
      paint();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea, dialog")) return;
    const step = event.shiftKey ? 10 : 1;
    const keys = {
      ArrowLeft: () => show(frame - step),
      ArrowRight: () => show(frame + step),
      Home: () => show(0),
      End: () => show(state.frames - 1),
      o: () => setView("original"),
      m: () => setView("masked"),
      r: () => setView("output"),
      b: () => setDrawing(!drawing),
      n: nextFlag,
    };
    const action = keys[event.key] || keys[event.key.toLowerCase()];
    if (action) {
      event.preventDefault();
      action();
    }
  });
}

wire();
load().catch((error) => say(error.message, true));
