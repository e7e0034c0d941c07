// The call inspector: one call's timeline (both channels, turns, what the caller heard, barge-ins,
// tool calls, DTMF, reconnects, reply latencies), its recording with a playhead, transcript and events.
// Live while the call runs (polls /timeline each second), from the record afterwards.
"use strict";

(() => {
  const { el, svg, api, Forbidden, bindTokenForm, setStatus, clock, dateTime, offset, duration, ms } = GW;
  const callId = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop());
  const POLL_MS = 1000;
  const LANE_H = 72;
  // Events drawn on the events lane, by row; the rest are only listed.
  const ROW = { barge_in: 1, go_away: 2, reconnect: 2, connect_failed: 2, fallback: 2, failure: 2,
    turn_end_reason: 2, grounding: 2, orphan_closed: 2 };
  const LABEL = { barge_in: "barge-in", go_away: "goAway", reconnect: "reconnect", connect_failed: "connect failed",
    fallback: "fallback", failure: "failure", turn_end_reason: "turn ended", grounding: "web search",
    orphan_closed: "closed by", session: "session", reply: "reply", greeting: "greeting" };

  let doc = null;
  let peaks = null;
  let peaksTries = 0;
  let zoom = 1;
  let position = 0;
  let selected = null;
  let timer = null;
  const player = document.getElementById("player");
  const scroller = document.getElementById("timeline-scroll");
  const line = document.getElementById("timeline");

  // --- data -----------------------------------------------------------------------------------
  async function load() {
    try {
      doc = await api("/admin/calls/" + encodeURIComponent(callId) + "/timeline");
    } catch (err) {
      setStatus(err.message, true);
      if (!(err instanceof Forbidden) && !doc) showMissing(err.message);
      return;
    }
    if (doc.recording && !peaks && peaksTries < 10) {
      peaksTries += 1;
      try {
        peaks = await api(doc.recording.peaks_url);
      } catch (err) {
        peaks = null; // not finalised yet: the next poll tries again
      }
    }
    render();
    const live = doc.state === "active";
    setStatus(live ? "live · updated " + clock(Date.now() / 1000) : "from the call record", false);
    const again = live || (doc.recording && !peaks && peaksTries < 10) || doc.state === "unfinished";
    clearTimeout(timer);
    if (again) timer = setTimeout(load, POLL_MS);
  }

  function showMissing(text) {
    document.getElementById("call-id").textContent = callId;
    document.getElementById("conversation").replaceChildren(el("li", { class: "empty" }, text));
  }

  // --- geometry -------------------------------------------------------------------------------
  const t0 = () => doc.started_at;
  function span() {
    const end = doc.ended_at || doc.now;
    let d = end - doc.started_at;
    if (peaks) d = Math.max(d, peaks.duration_s);
    return Math.max(d, 1);
  }
  function pps() {
    const fit = Math.max(200, scroller.clientWidth - 2) / span();
    return fit * zoom;
  }
  const x = (t) => (t - t0()) * pps();

  // --- rendering ------------------------------------------------------------------------------
  function render() {
    document.getElementById("call-id").textContent = doc.call_id;
    document.title = "Call " + doc.call_id + " · Gemini phone gateway";
    const state = document.getElementById("call-state");
    const label = { active: "live", ended: "ended", unfinished: "unfinished", active_elsewhere: "on another replica" };
    state.textContent = label[doc.state] || doc.state;
    state.className = "pill" + (doc.state === "active" ? " live" : doc.state === "unfinished" ? " bad" : "");
    state.setAttribute("data-state", doc.state);
    renderFacts();
    renderSummary();
    renderTimeline();
    renderConversation();
    renderTools();
    renderEvents();
    renderPlayer();
  }

  function renderFacts() {
    const facts = [
      el("span", {}, el("b", {}, doc.from || "–"), " → ", el("b", {}, doc.to || "–")),
      el("span", {}, "dialplan ", el("b", {}, doc.dialplan), doc.dialplan_version ? " @ " + doc.dialplan_version : ""),
      el("span", {}, "started ", el("b", {}, dateTime(doc.started_at))),
    ];
    if (doc.ended_at) {
      facts.push(el("span", { "data-ended-by": doc.ended_by || "" }, "ended by ", el("b", {}, doc.ended_by || "–"),
        doc.end_reason ? " (" + doc.end_reason + ")" : ""));
    }
    if (doc.instance) facts.push(el("span", {}, "instance ", el("b", {}, doc.instance)));
    document.getElementById("facts").replaceChildren(...facts);
  }

  function median(values) {
    if (!values.length) return null;
    const s = values.slice().sort((a, b) => a - b);
    return s[Math.floor((s.length - 1) / 2)];
  }

  function card(label, value, hint, extra) {
    return el("div", Object.assign({ class: "card" }, extra || {}),
      el("div", { class: "label" }, label), el("div", { class: "value" }, value),
      hint ? el("div", { class: "hint" }, hint) : null);
  }

  function renderSummary() {
    const latencies = doc.turns.filter((t) => t.reply_latency_ms != null).map((t) => t.reply_latency_ms);
    const count = (kind) => doc.events.filter((e) => e.kind === kind).length;
    const end = doc.ended_at || doc.now;
    const tokens = doc.usage && doc.usage.total_tokens;
    document.getElementById("summary").replaceChildren(
      card("Duration", duration(end - doc.started_at), doc.state === "active" ? "and counting" : null),
      card("Turns", String(doc.turns.length),
        doc.turns.filter((t) => t.role === "caller").length + " caller · " +
        doc.turns.filter((t) => t.role === "bot").length + " bot"),
      card("Reply latency", ms(median(latencies)),
        latencies.length ? "median of " + latencies.length + " · max " + ms(Math.max(...latencies)) : "no replies yet",
        { "data-median-latency-ms": median(latencies) }),
      card("Barge-ins", String(count("barge_in"))),
      card("Tool calls", String(doc.tool_calls.length),
        doc.tool_calls.filter((c) => c.status !== "ok").length + " failed"),
      card("Reconnects", String(count("reconnect")), count("go_away") + " goAway"),
      card("Tokens", tokens ? String(tokens) : "–"),
    );
  }

  function tickStep(p) {
    for (const step of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800]) if (step * p >= 72) return step;
    return 3600;
  }

  function wave(values, bucket, cls, p) {
    // A mirrored envelope; square root so quiet speech still shows next to loud speech.
    const mid = LANE_H / 2;
    const amp = mid - 3;
    const top = [];
    const bottom = [];
    values.forEach((v, i) => {
      const h = Math.sqrt(Math.min(1000, v) / 1000) * amp;
      const xa = (i * bucket * p).toFixed(1);
      const xb = ((i + 1) * bucket * p).toFixed(1);
      top.push(xa + "," + (mid - h).toFixed(1), xb + "," + (mid - h).toFixed(1));
      bottom.push(xb + "," + (mid + h).toFixed(1), xa + "," + (mid + h).toFixed(1));
    });
    if (!top.length) return null;
    const width = Math.max(1, values.length * bucket * p);
    return svg("svg", { class: "wave " + cls, viewBox: "0 0 " + width.toFixed(1) + " " + LANE_H,
      preserveAspectRatio: "none", "aria-hidden": "true", style: "width:" + width.toFixed(1) + "px" },
      svg("path", { d: "M" + top.join(" L") + " L" + bottom.reverse().join(" L") + " Z" }));
  }

  function heardFraction(turn) {
    if (!turn.interrupted) return 1;
    const words = (turn.text || "").split(/\s+/).filter(Boolean).length;
    const heard = (turn.heard || "").split(/\s+/).filter(Boolean).length;
    return words ? heard / words : 0;
  }

  function renderTimeline() {
    const p = pps();
    const width = Math.max(scroller.clientWidth - 2, span() * p);
    const follow = doc.state === "active" && scroller.scrollLeft + scroller.clientWidth >= scroller.scrollWidth - 30;
    line.style.width = width + "px";
    const nodes = [];
    // axis
    const axis = el("div", { class: "axis" });
    const step = tickStep(p);
    for (let s = 0; s <= span() + 0.001; s += step) {
      axis.append(el("div", { class: "tick", style: "left:" + (s * p).toFixed(1) + "px" }, offset(s)));
    }
    nodes.push(axis);
    const caller = el("div", { class: "lane caller" }, el("div", { class: "lane-label" }, "Caller"));
    const latency = el("div", { class: "lane latency" });
    const bot = el("div", { class: "lane bot" }, el("div", { class: "lane-label" }, "Bot"));
    const events = el("div", { class: "lane events" }, el("div", { class: "lane-label" }, "Events"));
    // waveforms: the recording's peaks, else the live levels
    if (peaks) {
      caller.append(wave(peaks.caller, peaks.bucket_s, "caller", p) || "");
      bot.append(wave(peaks.bot, peaks.bucket_s, "bot", p) || "");
    } else if (doc.levels) {
      const shift = (doc.levels.start - t0()) * p;
      for (const [lane, key] of [[caller, "caller"], [bot, "bot"]]) {
        const w = wave(doc.levels[key], doc.levels.interval_s, key, p);
        if (w) {
          w.style.left = shift.toFixed(1) + "px";
          lane.append(w);
        }
      }
    }
    const end = doc.ended_at || doc.now;
    for (const turn of doc.turns) {
      const start = x(turn.started_at);
      const stop = x(turn.ended_at || (turn.live ? end : turn.started_at));
      const lane = turn.role === "bot" ? bot : turn.role === "caller" || turn.role === "dtmf" ? caller : null;
      if (turn.role === "dtmf") {
        events.append(marker("dtmf", turn.started_at, 1, "key " + turn.text,
          { "data-turn-seq": turn.seq, "data-digit": turn.text }));
      }
      if (!lane) {
        events.append(marker("system", turn.started_at, 2, turn.text, { "data-turn-seq": turn.seq }));
        continue;
      }
      const minWidth = turn.role === "dtmf" ? 34 : 8;
      const band = el("button", {
        type: "button",
        class: "band " + turn.role + (turn.live ? " live" : ""),
        style: "left:" + start.toFixed(1) + "px;width:" + Math.max(minWidth, stop - start).toFixed(1) + "px",
        title: (turn.role === "dtmf" ? "key " : "") + turn.text +
          (turn.interrupted ? "\n\nheard: " + (turn.heard || "nothing") : ""),
        "data-turn-seq": turn.seq,
        "data-role": turn.role,
        "data-start": (turn.started_at - t0()).toFixed(3),
        "data-interrupted": turn.interrupted ? "true" : null,
        "data-latency-ms": turn.reply_latency_ms != null ? turn.reply_latency_ms : null,
        "aria-label": turn.role + " at " + offset(turn.started_at - t0()) + ": " + turn.text,
      }, turn.role === "dtmf" ? "#" + turn.text : turn.text || "…");
      if (turn.interrupted) {
        const cut = 100 * (1 - heardFraction(turn));
        band.append(el("span", { class: "cut", style: "width:" + cut.toFixed(1) + "%", "aria-hidden": "true" }));
      }
      band.addEventListener("click", (e) => { e.stopPropagation(); select(turn.seq); seek(turn.started_at - t0()); });
      lane.append(band);
      if (turn.reply_latency_ms != null && turn.speech_end_at) {
        const a = x(turn.speech_end_at);
        const b = x(turn.speech_end_at + turn.reply_latency_ms / 1000);
        latency.append(el("div", {
          class: "latency-mark", style: "left:" + a.toFixed(1) + "px;width:" + Math.max(2, b - a).toFixed(1) + "px",
          "data-turn-seq": turn.seq, "data-latency-ms": turn.reply_latency_ms,
          title: "reply latency: end of caller speech → first bot audio",
        }, el("span", {}, ms(turn.reply_latency_ms))));
      }
    }
    for (const call of doc.tool_calls) {
      const start = x(call.started_at);
      const w = Math.max(10, (call.duration_ms / 1000) * p);
      const node = el("button", {
        type: "button", class: "marker tool" + (call.status === "ok" ? "" : " error"),
        style: "left:" + start.toFixed(1) + "px;top:6px;min-width:" + w.toFixed(1) + "px",
        title: call.name + "(" + JSON.stringify(call.arguments) + ") → " + call.status + " in " + ms(call.duration_ms),
        "data-tool-call-id": call.id, "data-tool-name": call.name, "data-duration-ms": call.duration_ms,
        "data-status": call.status,
      }, "⚙ " + call.name + " · " + ms(call.duration_ms));
      node.addEventListener("click", (e) => { e.stopPropagation(); seek(call.started_at - t0()); });
      events.append(node);
    }
    for (const event of doc.events) {
      if (!(event.kind in ROW)) continue;
      events.append(marker(event.kind, event.at, ROW[event.kind], eventLabel(event),
        { "data-event-kind": event.kind, "data-seq": event.seq }));
    }
    nodes.push(caller, latency, bot, events);
    if (doc.state === "active") nodes.push(el("div", { class: "nowline", style: "left:" + x(doc.now).toFixed(1) + "px" }));
    nodes.push(el("div", { class: "playhead", id: "playhead" }));
    line.replaceChildren(...nodes);
    placePlayhead();
    if (follow) scroller.scrollLeft = scroller.scrollWidth;
  }

  function eventLabel(event) {
    const d = event.detail || {};
    if (event.kind === "reconnect") return "reconnect · " + (d.cause || "") + (d.gap_ms != null ? " · " + ms(d.gap_ms) : "");
    if (event.kind === "go_away") return "goAway" + (d.time_left_s != null ? " · " + d.time_left_s + " s left" : "");
    if (event.kind === "failure") return "failure · " + (d.task || "");
    if (event.kind === "fallback") return "fallback · " + (d.action || "");
    return LABEL[event.kind] || event.kind;
  }

  function marker(kind, at, row, text, attrs) {
    const node = el("button", Object.assign({
      type: "button", class: "marker " + kind,
      style: "left:" + x(at).toFixed(1) + "px;top:" + (6 + row * 27) + "px",
      title: text + " at " + offset(at - t0()),
    }, attrs), text);
    node.addEventListener("click", (e) => { e.stopPropagation(); seek(at - t0()); });
    return node;
  }

  function renderConversation() {
    document.getElementById("turn-count").textContent = "(" + doc.turns.length + ")";
    const list = document.getElementById("conversation");
    if (!doc.turns.length) {
      list.replaceChildren(el("li", { class: "empty" }, doc.state === "active" ? "Nothing said yet." : "No turns."));
      return;
    }
    list.replaceChildren(...doc.turns.map((turn) => {
      const chips = el("span", { class: "chips" });
      if (turn.reply_latency_ms != null) {
        chips.append(el("span", { class: "chip latency", title: "end of caller speech → first bot audio" },
          "↳ " + ms(turn.reply_latency_ms)));
      }
      if (turn.greeting_latency_ms != null) chips.append(el("span", { class: "chip" }, "greeting " + ms(turn.greeting_latency_ms)));
      if (turn.interrupted) chips.append(el("span", { class: "chip cut" }, "cut off"));
      if (turn.live) chips.append(el("span", { class: "chip" }, "speaking…"));
      const body = el("div", {}, el("span", { class: "who" }, turn.role === "dtmf" ? "key" : turn.role), chips, el("br"));
      if (turn.interrupted) {
        const heard = turn.heard || "";
        const rest = turn.text.startsWith(heard) ? turn.text.slice(heard.length) : turn.text;
        body.append(el("span", { class: "heard-part" }, heard), " ",
          el("span", { class: "unheard", title: "not heard: the caller barged in" }, rest.trim()));
      } else {
        body.append(el("span", {}, turn.role === "dtmf" ? "pressed " + turn.text : turn.text));
      }
      const item = el("li", {
        class: "msg " + turn.role + (selected === turn.seq ? " selected" : ""), tabindex: 0,
        "data-turn-seq": turn.seq, "data-role": turn.role,
        "data-latency-ms": turn.reply_latency_ms != null ? turn.reply_latency_ms : null,
      }, el("span", { class: "at" }, offset(turn.started_at - t0())), body);
      const go = () => { select(turn.seq); seek(turn.started_at - t0()); };
      item.addEventListener("click", go);
      item.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
      return item;
    }));
  }

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  function renderTools() {
    document.getElementById("tool-count").textContent = "(" + doc.tool_calls.length + ")";
    const box = document.getElementById("tools");
    if (!doc.tool_calls.length) {
      box.replaceChildren(el("p", { class: "empty" }, "None."));
      return;
    }
    box.replaceChildren(...doc.tool_calls.map((call) => {
      const node = el("div", {
        class: "tool-card" + (call.status === "ok" ? "" : " error"), tabindex: 0,
        "data-tool-call-id": call.id, "data-tool-name": call.name, "data-duration-ms": call.duration_ms,
      },
      el("div", { class: "head" }, el("span", { class: "name" }, call.name),
        el("span", { class: "pill" + (call.status === "ok" ? "" : " bad") }, call.status),
        el("span", { class: "sub" }, ms(call.duration_ms) + " at " + offset(call.started_at - t0()))),
      el("div", { class: "k" }, "arguments"), el("pre", { class: "args" }, pretty(call.arguments)),
      call.error ? el("div", { class: "k" }, "error") : el("div", { class: "k" }, "result"),
      el("pre", { class: "result" }, call.error ? call.error : pretty(call.result)));
      const go = () => seek(call.started_at - t0());
      node.addEventListener("click", go);
      node.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
      return node;
    }));
  }

  function detailText(event) {
    const d = Object.assign({}, event.detail || {});
    if (event.kind === "reply") return "reply latency " + ms(d.latency_ms);
    if (event.kind === "greeting") return "greeting after " + ms(d.latency_ms);
    return Object.entries(d).filter(([, v]) => v !== null && v !== "" && v !== undefined)
      .map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join("  ");
  }

  function renderEvents() {
    document.getElementById("event-count").textContent = "(" + doc.events.length + ")";
    const list = document.getElementById("events");
    if (!doc.events.length) {
      list.replaceChildren(el("li", { class: "empty" }, "None."));
      return;
    }
    list.replaceChildren(...doc.events.map((event) => {
      const item = el("li", { "data-event-kind": event.kind, tabindex: 0 },
        el("span", { class: "at" }, offset(event.at - t0())),
        el("span", { class: "kind" }, LABEL[event.kind] || event.kind),
        el("span", { class: "detail" }, detailText(event)));
      item.addEventListener("click", () => seek(event.at - t0()));
      return item;
    }));
  }

  function renderPlayer() {
    const note = document.getElementById("player-note");
    if (doc.recording) {
      if (player.getAttribute("src") === null) {
        player.src = doc.recording.url;
        player.hidden = false;
      }
      note.textContent = "";
    } else {
      note.textContent = doc.state === "active" ? "Live levels; the recording plays once the call has ended." :
        "No recording for this call (the dialplan's [recording] is off).";
    }
  }

  // --- playhead and seeking ------------------------------------------------------------------
  function placePlayhead() {
    const head = document.getElementById("playhead");
    if (!head || !doc) return;
    head.style.left = (position * pps()).toFixed(1) + "px";
    head.setAttribute("data-t", position.toFixed(2));
    document.getElementById("position").textContent = offset(position) + " / " + offset(span());
  }

  function keepVisible() {
    const px = position * pps();
    if (px < scroller.scrollLeft + 20 || px > scroller.scrollLeft + scroller.clientWidth - 40) {
      scroller.scrollLeft = Math.max(0, px - scroller.clientWidth / 3);
    }
  }

  function seek(t) {
    position = Math.max(0, Math.min(t, span()));
    if (doc.recording && !player.hidden) {
      if (player.readyState >= 1) player.currentTime = position;
      else player.addEventListener("loadedmetadata", () => { player.currentTime = position; }, { once: true });
    }
    placePlayhead();
    keepVisible();
  }

  function select(seq) {
    selected = seq;
    for (const node of document.querySelectorAll(".selected")) node.classList.remove("selected");
    for (const node of document.querySelectorAll('[data-turn-seq="' + seq + '"]')) node.classList.add("selected");
    const row = document.querySelector('.msg[data-turn-seq="' + seq + '"]');
    if (row && row.scrollIntoView) row.scrollIntoView({ block: "nearest" });
  }

  line.addEventListener("click", (event) => {
    if (!doc) return;
    const box = line.getBoundingClientRect();
    seek((event.clientX - box.left) / pps());
  });
  line.addEventListener("keydown", (event) => {
    if (!doc) return;
    const moves = { ArrowLeft: -5, ArrowRight: 5, PageUp: -30, PageDown: 30 };
    if (event.key in moves) { event.preventDefault(); seek(position + moves[event.key]); }
    else if (event.key === "Home") { event.preventDefault(); seek(0); }
    else if (event.key === "End") { event.preventDefault(); seek(span()); }
    else if (event.key === " " && !player.hidden) { event.preventDefault(); if (player.paused) player.play(); else player.pause(); }
  });
  let raf = 0;
  function follow() {
    position = player.currentTime;
    placePlayhead();
    keepVisible();
    raf = player.paused ? 0 : requestAnimationFrame(follow);
  }
  player.addEventListener("play", () => { if (!raf) raf = requestAnimationFrame(follow); });
  player.addEventListener("seeked", () => { position = player.currentTime; placePlayhead(); });
  player.addEventListener("timeupdate", () => { if (!raf) { position = player.currentTime; placePlayhead(); } });

  function rezoom(factor) {
    if (!doc) return;
    const centre = (scroller.scrollLeft + scroller.clientWidth / 2) / pps();
    zoom = factor === 0 ? 1 : Math.max(1, Math.min(64, zoom * factor));
    renderTimeline();
    scroller.scrollLeft = Math.max(0, centre * pps() - scroller.clientWidth / 2);
  }
  document.getElementById("zoom-in").addEventListener("click", () => rezoom(2));
  document.getElementById("zoom-out").addEventListener("click", () => rezoom(0.5));
  document.getElementById("zoom-fit").addEventListener("click", () => rezoom(0));
  let resizing = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (doc) renderTimeline(); }, 100);
  });

  document.getElementById("nav-call").setAttribute("href", location.pathname);
  bindTokenForm(load);
  load();
})();
