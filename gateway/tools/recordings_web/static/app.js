// consolegw recordings: the page's script. Read-only; every value from the index is shown
// through textContent (a channel name or a TTY caller's text is input, never markup).
"use strict";

const state = { channel: "", records: [], selected: null };

function $(id) { return document.getElementById(id); }

function localTime(ts) {
  if (!ts) { return "-"; }
  const d = new Date(ts);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function showStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

async function getJson(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) { td.className = className; }
  row.appendChild(td);
  return td;
}

async function loadChannels() {
  const body = await getJson("/api/channels");
  $("site-title").textContent = body.title ? `on ${body.title}` : "";
  document.title = `consolegw recordings ${body.title || ""}`.trim();
  const list = $("channel-list");
  list.replaceChildren();
  const entries = [{ channel: "", last_start: null }].concat(body.channels);
  for (const entry of entries) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.channel = entry.channel;
    button.textContent = entry.channel || "All channels";
    if (entry.last_start) {
      const last = document.createElement("span");
      last.className = "last";
      last.textContent = `last ${localTime(entry.last_start * 1000)}`;
      button.appendChild(last);
    }
    button.setAttribute("aria-pressed", String(entry.channel === state.channel));
    button.addEventListener("click", () => {
      state.channel = entry.channel;
      for (const b of list.querySelectorAll("button")) {
        b.setAttribute("aria-pressed", String(b.dataset.channel === state.channel));
      }
      loadRecords();
    });
    li.appendChild(button);
    list.appendChild(li);
  }
}

function filterParams() {
  const params = new URLSearchParams();
  if (state.channel) { params.set("channel", state.channel); }
  for (const name of ["direction", "since", "until", "text", "limit"]) {
    const value = $(name).value.trim();
    if (value) { params.set(name, value); }
  }
  return params;
}

async function loadRecords() {
  showStatus("loading…");
  let body;
  try {
    body = await getJson(`/api/recordings?${filterParams()}`);
  } catch (e) {
    showStatus(`cannot list the recordings: ${e.message}`, true);
    return;
  }
  state.records = body.recordings;
  const tbody = $("records").querySelector("tbody");
  tbody.replaceChildren();
  for (const rec of state.records) {
    const row = document.createElement("tr");
    row.dataset.id = String(rec.id);
    if (rec.status === "incomplete") { row.classList.add("incomplete"); }
    cell(row, localTime(rec.start_ts));
    cell(row, rec.channel);
    cell(row, rec.direction);
    cell(row, `${rec.duration_s.toFixed(1)} s`);
    cell(row, rec.level_dbfs === null ? "-" : `${rec.level_dbfs.toFixed(0)} dBFS`);
    cell(row, rec.status);
    cell(row, rec.requested_by || "");
    cell(row, rec.faults.join(", "));
    cell(row, rec.tty_text.trim().replace(/\n/g, " / "), "tty");
    const td = document.createElement("td");
    const play = document.createElement("button");
    play.type = "button";
    play.className = "play";
    play.textContent = "Play";
    play.addEventListener("click", (event) => { event.stopPropagation(); select(rec, true); });
    td.appendChild(play);
    row.appendChild(td);
    row.addEventListener("click", () => select(rec, false));
    tbody.appendChild(row);
  }
  const n = state.records.length;
  showStatus(n === 0 ? "no recordings match" : `${n} recording${n === 1 ? "" : "s"}`);
}

function fact(list, name, value) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function select(rec, play) {
  state.selected = rec.id;
  for (const row of $("records").querySelectorAll("tbody tr")) {
    row.classList.toggle("selected", row.dataset.id === String(rec.id));
  }
  $("detail").hidden = false;
  $("detail-title").textContent =
    `#${rec.id} ${rec.channel} ${rec.direction === "tx" ? "transmitted" : "received"}`;
  const player = $("player");
  if (player.dataset.id !== String(rec.id)) {
    player.dataset.id = String(rec.id);
    player.src = rec.audio_url;
  }
  $("download").href = rec.audio_url;
  $("download").setAttribute("download", `recording-${rec.id}`);
  const facts = $("facts");
  facts.replaceChildren();
  fact(facts, "start", localTime(rec.start_ts));
  fact(facts, "end", localTime(rec.end_ts));
  fact(facts, "length", `${rec.duration_s.toFixed(2)} s`);
  fact(facts, "status", rec.status);
  if (rec.requested_by) { fact(facts, "keyed by", rec.requested_by); }
  if (rec.faults.length) { fact(facts, "faults", rec.faults.join(", ")); }
  if (rec.split_from !== null) { fact(facts, "part of", `#${rec.split_from}`); }
  if (rec.dropped_s > 0) { fact(facts, "audio lost", `${rec.dropped_s.toFixed(1)} s`); }
  fact(facts, "file", rec.path);
  fact(facts, "bytes", String(rec.bytes));
  fact(facts, "sha256", rec.sha256 || "(open)");
  $("transcript-box").hidden = !rec.tty_text;
  $("transcript").textContent = rec.tty_text;
  if (play) {
    player.play().catch((e) => showStatus(`cannot play #${rec.id}: ${e.message}`, true));
  }
}

function start() {
  // The token now sits in a cookie: keep it out of the address bar and the history.
  if (window.location.search.includes("token=")) { history.replaceState(null, "", "/"); }
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); loadRecords(); });
  $("filters").addEventListener("reset", () => { setTimeout(loadRecords, 0); });
  $("player").addEventListener("error", () => {
    showStatus(`cannot play #${$("player").dataset.id}: the browser cannot read the file`, true);
  });
  loadChannels()
    .then(loadRecords)
    .catch((e) => showStatus(`cannot reach the recordings: ${e.message}`, true));
}

document.addEventListener("DOMContentLoaded", start);
