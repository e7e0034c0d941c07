// The softphone page: dial pad, the dialplans' numbers, and one call at a time over /phone/media.
// Protocol: gateway/telephony/browser.py. Audio: worklet.js (capture → 16 kHz PCM16, playback ring
// buffer). Plain DOM, no build step. Transcript text is untrusted: it only ever goes in via textContent.
//
// The reply latency is measured here, on the audio context's clock: from the end of the caller's last
// speech (the last 20 ms frame above the speech threshold, once 200 ms of quiet followed) to the moment
// the bot's next reply starts playing out of the page (its first sample leaves the playback buffer, plus
// the output latency the browser reports).
"use strict";

const TOKEN_KEY = "gatewayAdminToken"; // shared with the admin page
const SPEECH_RMS = 0.02; // about -34 dBFS: above a quiet room, below any speech
const MIN_SPEECH_S = 0.12; // a shorter burst is a click, not an utterance
const END_OF_SPEECH_S = 0.2; // quiet after speech that ends the utterance
const POLL_MS = 400;

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let plans = [];
let call = null; // the call in progress (see startCall)

const $ = (id) => document.getElementById(id);
const root = $("phone");

function el(tag, cls, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function setData(name, value) {
  root.setAttribute("data-" + name, String(value));
}

function bump(name, by = 1) {
  setData(name, Number(root.getAttribute("data-" + name) || 0) + by);
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = "pill" + (kind ? " is-" + kind : "");
}

function setState(state) {
  setData("state", state);
  const active = state === "connecting" || state === "in-call";
  $("call").hidden = active;
  $("hangup").hidden = !active;
  $("mute").disabled = state !== "in-call";
  for (const b of document.querySelectorAll(".plan button")) b.disabled = active;
}

async function api(path, options) {
  const headers = Object.assign({}, (options || {}).headers);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 403) {
    $("token-form").hidden = false;
    throw new Error("not authorised: enter the admin token");
  }
  if (!response.ok) {
    let text = await response.text();
    try { text = JSON.parse(text).message || text; } catch (e) { /* plain text */ }
    throw new Error(text || response.status + " " + response.statusText);
  }
  return response.json();
}

// --- numbers ------------------------------------------------------------------------------------

function matchPlan(number) {
  if (!number) return null;
  let best = null;
  let bestRank = -1;
  for (const plan of plans) {
    for (const pattern of plan.numbers) {
      const prefix = pattern.endsWith("*");
      const hit = prefix ? number.startsWith(pattern.slice(0, -1)) : number === pattern;
      const rank = prefix ? pattern.length : 1000;
      if (hit && rank > bestRank) { best = plan; bestRank = rank; }
    }
  }
  return best || plans.find((p) => p.default) || null;
}

function showRoute() {
  const number = $("number").value.trim();
  const plan = matchPlan(number);
  const route = $("route");
  route.textContent = "";
  if (number && plan) route.append("reaches ", el("b", "", plan.name), plan.voice ? " · " + plan.voice : "");
  else route.textContent = "\u00a0";
}

async function loadPlans() {
  const list = $("plans");
  try {
    const doc = await api("api/numbers");
    plans = doc.dialplans;
  } catch (err) {
    list.replaceChildren(el("li", "empty", err.message));
    return;
  }
  $("token-form").hidden = true;
  list.replaceChildren();
  for (const plan of plans) {
    const name = el("div", "name", plan.name);
    if (plan.default) name.append(el("small", "", "catch-all"));
    const nums = el("div", "nums");
    if (plan.numbers.length) nums.append(el("code", "", plan.numbers.join("  ")));
    else nums.append("every number no other plan takes");
    if (plan.callers.length) nums.append(" · only from ", el("code", "", plan.callers.join(", ")));
    const dial = el("button", "", "call " + (plan.dial || ""));
    dial.type = "button";
    dial.disabled = !plan.dial || !!call;
    dial.setAttribute("data-dial", plan.dial);
    dial.addEventListener("click", () => {
      $("number").value = plan.dial;
      showRoute();
      startCall();
    });
    const item = el("li", "plan", name, nums, dial);
    item.setAttribute("data-plan", plan.name);
    list.append(item);
  }
  if (!$("number").value) {
    const first = plans.find((p) => p.default && p.dial) || plans.find((p) => p.dial);
    if (first) $("number").value = first.dial;
  }
  showRoute();
}

// --- dial pad -------------------------------------------------------------------------------------

function press(key) {
  if (call && call.ws && call.ws.readyState === WebSocket.OPEN) {
    call.ws.send(JSON.stringify({ event: "dtmf", digit: key }));
    addLocalTurn("dtmf", "pressed " + key);
    return;
  }
  $("number").value += key;
  showRoute();
}

function setupKeypad() {
  for (const key of document.querySelectorAll(".key")) {
    let held = null;
    key.addEventListener("pointerdown", () => {
      // A long press on 0 gives "+", as on a phone.
      if (key.dataset.key === "0") held = setTimeout(() => { held = "plus"; press("+"); }, 550);
    });
    key.addEventListener("click", () => {
      if (held === "plus") { held = null; return; }
      clearTimeout(held);
      held = null;
      press(key.dataset.key);
    });
  }
  $("erase").addEventListener("click", () => {
    const input = $("number");
    input.value = input.value.slice(0, -1);
    showRoute();
  });
  $("number").addEventListener("input", showRoute);
  $("number").addEventListener("keydown", (e) => { if (e.key === "Enter" && !call) startCall(); });
  document.addEventListener("keydown", (e) => {
    if (!call || e.target === $("number") || e.target === $("token")) return;
    if (/^[0-9*#]$/.test(e.key)) press(e.key);
  });
  $("call").addEventListener("click", () => startCall());
  $("hangup").addEventListener("click", () => hangUp());
  $("mute").addEventListener("click", () => {
    if (!call) return;
    call.muted = !call.muted;
    call.capture.port.postMessage({ muted: call.muted });
    $("mute").classList.toggle("on", call.muted);
    $("mute").textContent = call.muted ? "muted" : "mute";
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    loadPlans();
  });
}

// --- the call -------------------------------------------------------------------------------------

function resetCallView() {
  for (const name of ["frames-sent", "frames-received", "played-ms", "greeting-ms", "replies", "clears",
    "marks-echoed", "gaps"]) setData(name, 0);
  setData("jitter-ms", 60);
  setData("reply-ms", "");
  setData("greeting-latency-ms", "");
  setData("call-sid", "");
  $("latency").textContent = "–";
  $("latency-avg").textContent = "–";
  $("latency-count").textContent = "no replies yet";
  $("greeting").textContent = "–";
  $("transcript").replaceChildren();
  $("dialplan").hidden = true;
}

async function startCall() {
  if (call) return;
  const to = $("number").value.trim();
  if (!to) { setStatus("enter a number", "error"); return; }
  resetCallView();
  setState("connecting");
  setStatus("connecting…", "busy");
  const c = {
    to, sid: "", ws: null, ctx: null, mic: null, capture: null, playback: null, muted: false,
    turns: [], latencies: [], startedAt: 0, timer: null, poll: null, ended: false,
    // Speech tracking on the capture clock (seconds of AudioContext time).
    voiced: 0, speechStart: -1, lastVoice: -1, utteranceEnd: -1, answered: true, spokeYet: false,
    playedAtFirstSpeech: -1, botLevel: 0, youLevel: 0, botPlaying: false,
  };
  call = c;
  try {
    c.ctx = new AudioContext({ latencyHint: "interactive" });
    await c.ctx.audioWorklet.addModule("worklet.js");
    c.mic = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    if (c.ended) return;
    const admitted = await api("call", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ to }),
    });
    if (c.ended) return;
    c.sid = admitted.call_sid;
    setData("call-sid", c.sid);
    $("dialplan").textContent = "dialplan " + admitted.dialplan;
    $("dialplan").hidden = false;
    await c.ctx.resume();
    openSocket(c, admitted);
  } catch (err) {
    endCall(c, err.name === "NotAllowedError" ? "microphone blocked: allow it for this page" : err.message, true);
  }
}

function openSocket(c, admitted) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + admitted.media_path);
  ws.binaryType = "arraybuffer";
  c.ws = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify({
      event: "start", call_sid: c.sid, token: admitted.token, to: c.to,
      media_format: { encoding: "audio/l16", sample_rate: 16000, channels: 1 },
    }));
    startAudio(c);
    c.startedAt = performance.now();
    c.startCtx = c.ctx.currentTime;
    setState("in-call");
    setStatus("in call", "live");
    c.timer = setInterval(() => tick(c), 250);
    c.poll = setInterval(() => pollTranscript(c), POLL_MS);
  };
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") {
      bump("frames-received", event.data.byteLength / 640);
      c.playback.port.postMessage({ pcm: event.data }, [event.data]);
      return;
    }
    let msg;
    try { msg = JSON.parse(event.data); } catch (e) { return; }
    if (msg.event === "mark") c.playback.port.postMessage({ mark: msg.name });
    else if (msg.event === "clear") {
      bump("clears");
      c.playback.port.postMessage({ clear: true });
    }
  };
  ws.onclose = (event) => {
    const why = event.code === 1000 || event.code === 1005 ? "call ended"
      : "call ended (" + event.code + (event.reason ? ": " + event.reason : "") + ")";
    endCall(c, why, event.code !== 1000 && event.code !== 1005 && !c.hangingUp);
  };
  ws.onerror = () => { /* onclose follows with the code */ };
}

function startAudio(c) {
  const ctx = c.ctx;
  const source = ctx.createMediaStreamSource(c.mic);
  c.capture = new AudioWorkletNode(ctx, "pcm16-capture", { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1 });
  c.playback = new AudioWorkletNode(ctx, "pcm16-playback", { numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [2] });
  source.connect(c.capture);
  c.capture.connect(ctx.destination); // outputs silence; keeps the node pulled by the graph
  c.playback.connect(ctx.destination);
  c.source = source;
  c.capture.port.onmessage = (event) => onCaptureFrame(c, event.data);
  c.playback.port.onmessage = (event) => onPlayback(c, event.data);
}

function onCaptureFrame(c, frame) {
  if (c.ws && c.ws.readyState === WebSocket.OPEN) {
    c.ws.send(frame.pcm);
    bump("frames-sent");
  }
  c.youLevel = Math.max(c.youLevel, frame.rms);
  // Utterance tracking for the reply latency.
  const t = frame.t;
  if (frame.rms >= SPEECH_RMS && !c.muted) {
    if (c.speechStart < 0) c.speechStart = t - 0.02;
    c.lastVoice = t;
    if (t - c.speechStart >= MIN_SPEECH_S) {
      c.spokeYet = true;
      c.answered = false;
      c.utteranceEnd = -1;
    }
  } else if (c.speechStart >= 0 && t - c.lastVoice >= END_OF_SPEECH_S) {
    if (!c.answered) c.utteranceEnd = c.lastVoice;
    c.speechStart = -1;
  }
}

function onPlayback(c, msg) {
  if (msg.mark !== undefined) {
    sendJSON(c, { event: "mark", name: msg.mark });
    bump("marks-echoed");
  } else if (msg.cleared !== undefined) {
    for (const name of msg.marks) sendJSON(c, { event: "mark", name });
    bump("marks-echoed", msg.marks.length);
    c.botPlaying = false;
  } else if (msg.started !== undefined) {
    c.botPlaying = true;
    if (msg.gap) { // ran dry mid-reply and resumed: the jitter buffer grew
      bump("gaps");
      setData("jitter-ms", Math.round(msg.jitter * 1000));
    }
    const heard = msg.started + (c.ctx.outputLatency || 0);
    if (c.greetingLatency === undefined) {
      c.greetingLatency = Math.round((heard - c.startCtx) * 1000);
      setData("greeting-latency-ms", c.greetingLatency);
      $("greeting").textContent = c.greetingLatency + " ms";
    }
    if (!c.answered && c.utteranceEnd >= 0 && heard > c.utteranceEnd) {
      recordLatency(c, Math.round((heard - c.utteranceEnd) * 1000));
    }
  } else if (msg.dry !== undefined) {
    c.botPlaying = false;
  } else if (msg.level !== undefined) {
    c.botLevel = Math.max(c.botLevel, msg.level);
    setData("played-ms", Math.round(msg.played * 1000));
    if (!c.spokeYet) setData("greeting-ms", Math.round(msg.played * 1000)); // bot audio before the caller spoke
  }
}

function recordLatency(c, ms) {
  c.answered = true;
  c.latencies.push(ms);
  setData("reply-ms", ms);
  setData("replies", c.latencies.length);
  $("latency").textContent = ms + " ms";
  const avg = c.latencies.reduce((a, b) => a + b, 0) / c.latencies.length;
  $("latency-avg").textContent = Math.round(avg) + " ms";
  $("latency-count").textContent = c.latencies.length + (c.latencies.length === 1 ? " reply" : " replies");
  c.pendingLatency = ms; // shown beside the next bot turn of the transcript
}

function sendJSON(c, msg) {
  if (c.ws && c.ws.readyState === WebSocket.OPEN) c.ws.send(JSON.stringify(msg));
}

function tick(c) {
  const s = Math.floor((performance.now() - c.startedAt) / 1000);
  $("timer").textContent = String(Math.floor(s / 60)).padStart(2, "0") + ":" + String(s % 60).padStart(2, "0");
}

function hangUp() {
  const c = call;
  if (!c) return;
  c.hangingUp = true;
  if (c.ws && c.ws.readyState === WebSocket.OPEN) {
    sendJSON(c, { event: "stop" });
    c.ws.close(1000, "hung up");
    setStatus("hanging up…", "busy");
  } else {
    endCall(c, "call cancelled", false);
  }
}

function endCall(c, why, failed) {
  if (c.ended) return;
  c.ended = true;
  clearInterval(c.timer);
  clearInterval(c.poll);
  if (c.capture) c.capture.port.postMessage("stop");
  if (c.playback) c.playback.port.postMessage("stop");
  if (c.mic) for (const track of c.mic.getTracks()) track.stop();
  if (c.ctx) c.ctx.close().catch(() => {});
  if (c.ws && c.ws.readyState <= WebSocket.OPEN) c.ws.close(1000);
  if (call === c) call = null;
  setState(c.sid ? "ended" : "idle");
  setStatus(why, failed ? "error" : "");
  if (c.sid) setTimeout(() => pollTranscript(c), 300);
  if (!c.sid && failed) $("transcript").replaceChildren(el("li", "empty", why));
}

// --- transcript ----------------------------------------------------------------------------------

async function pollTranscript(c) {
  if (!c.sid || c.polling) return;
  c.polling = true;
  try {
    const doc = await api("calls/" + encodeURIComponent(c.sid));
    renderTranscript(c, doc.transcript || []);
  } catch (err) {
    /* the call may live on another replica; the next poll tries again */
  } finally {
    c.polling = false;
  }
}

function turnItem(turn) {
  const item = el("li", "turn " + turn.role, el("span", "role", turn.role === "caller" ? "you" : turn.role),
    el("span", "text", turn.text));
  if (turn.interrupted) item.append(el("span", "heard", "cut off · heard: " + (turn.heard || "nothing")));
  return item;
}

function renderTranscript(c, turns) {
  const list = $("transcript");
  // Latencies belong to bot turns in order: the n-th measured reply to the n-th bot turn after a caller turn.
  const items = [];
  let replies = 0;
  let afterCaller = false;
  for (const turn of turns) {
    const item = turnItem(turn);
    if (turn.role === "caller") afterCaller = true;
    if (turn.role === "bot" && afterCaller) {
      afterCaller = false;
      if (replies < c.latencies.length) item.querySelector(".role").append(el("span", "lat", c.latencies[replies] + " ms"));
      replies++;
    }
    items.push(item);
  }
  for (const local of c.turns) items.push(turnItem(local));
  if (!items.length) items.push(el("li", "empty", "Listening…"));
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 24;
  list.replaceChildren(...items);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function addLocalTurn(role, text) {
  if (!call) return;
  call.turns.push({ role, text });
}

// --- meters --------------------------------------------------------------------------------------

function level(rms) {
  if (rms <= 0) return 0;
  return Math.max(0, Math.min(1, (20 * Math.log10(rms) + 60) / 60)); // -60 dBFS … 0 dBFS
}

const shown = { you: 0, bot: 0 };
function animate() {
  const c = call;
  const you = c ? level(c.youLevel) : 0;
  const bot = c ? level(c.botLevel) : 0;
  if (c) { c.youLevel = 0; c.botLevel = 0; }
  // Fast attack, slow release, as a VU meter.
  shown.you = you > shown.you ? you : shown.you * 0.9;
  shown.bot = bot > shown.bot ? bot : shown.bot * 0.9;
  $("meter-you").style.transform = "scaleX(" + shown.you.toFixed(3) + ")";
  $("meter-bot").style.transform = "scaleX(" + shown.bot.toFixed(3) + ")";
  requestAnimationFrame(animate);
}

setupKeypad();
setState("idle");
loadPlans();
requestAnimationFrame(animate);
