// The dashboard's live part: active calls with live transcripts, hang-up, the page's status line.
// Plain DOM, no build step. Caller speech is untrusted: it only ever goes in via textContent.
"use strict";

const REFRESH_MS = 1000;
let token = sessionStorage.getItem("gatewayAdminToken") || "";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options) {
  const headers = Object.assign({}, (options || {}).headers);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 403) {
    document.getElementById("token-form").style.display = "block";
    showUnauthorised();
    throw new Error("forbidden: enter the admin token");
  }
  if (!response.ok) throw new Error(path + ": " + response.status + " " + (await response.text()));
  return response.json();
}

function seconds(start, end) {
  const s = ((end || Date.now() / 1000) - start);
  return s.toFixed(0) + " s";
}

function turnItem(turn) {
  const item = el("li", { class: "turn " + turn.role },
    el("span", { class: "role" }, turn.role), " ", el("span", { class: "text" }, turn.text));
  if (turn.interrupted) {
    item.append(" ", el("span", { class: "heard" }, "[cut off; heard: " + (turn.heard || "nothing") + "]"));
  }
  return item;
}

async function hangUp(sid, button) {
  button.disabled = true;
  try {
    await api("/admin/calls/" + encodeURIComponent(sid) + "/hangup", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
  } catch (err) {
    setStatus(err.message, true);
    button.disabled = false;
  }
}

// Refused: say so where the calls would be, rather than claim there are none.
function showUnauthorised() {
  document.getElementById("active-count").textContent = "";
  document.getElementById("active").replaceChildren(
    el("p", { class: "empty unauthorised" }, "Not authorised: enter the admin token to see calls."));
  document.getElementById("records").replaceChildren();
}

function renderActive(calls) {
  const box = document.getElementById("active");
  document.getElementById("active-count").textContent = "(" + calls.length + ")";
  if (!calls.length) {
    box.replaceChildren(el("p", { class: "empty" }, "No active calls."));
    return;
  }
  box.replaceChildren(...calls.map((call) => {
    const button = el("button", { type: "button", class: "hangup" }, "Hang up");
    button.addEventListener("click", () => hangUp(call.call_sid, button));
    const turns = el("ul", { class: "turns" }, ...(call.transcript || []).map(turnItem));
    return el("section", { class: "call", "data-call-sid": call.call_sid },
      el("div", { class: "call-head" },
        el("a", { class: "sid", href: "/admin/calls/" + encodeURIComponent(call.call_sid) }, call.call_sid),
        el("span", { class: "meta" }, call.from + " → " + call.to),
        el("span", { class: "meta" }, "dialplan " + call.dialplan),
        el("span", { class: "meta" }, seconds(call.started_at)),
        // Several replicas (GATEWAY_REDIS_URL): which one carries the call.
        el("span", { class: "meta instance" }, call.instance ? "on " + call.instance : ""),
        button),
      turns);
  }));
}

function setStatus(text, error) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = error ? "error" : "";
}

async function refresh() {
  try {
    const calls = await api("/admin/calls");
    renderActive(calls.active);
    if (calls.records && calls.records.failing) {
      setStatus("call records are NOT being written (" + calls.records.pending + " waiting): "
        + calls.records.error, true);
      return;
    }
    // The records table, its filters and the charts are dashboard.js's.
    // A rejected dialplan edit keeps the gateway ready (the last good plans serve): say so here.
    const ready = await api("/readyz");
    if (ready.dialplans && ready.dialplans.last_edit_rejected) {
      setStatus("dialplan edit rejected; the last good dialplans are serving calls: " +
        ready.dialplans.reason, true);
      return;
    }
    setStatus("updated " + new Date().toLocaleTimeString(), false);
  } catch (err) {
    setStatus(err.message, true);
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token").value;
  sessionStorage.setItem("gatewayAdminToken", token);
  document.getElementById("token-form").style.display = "none";
  refresh();
});

refresh();
setInterval(refresh, REFRESH_MS);
