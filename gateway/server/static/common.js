// Shared by the dashboard and the call page: the admin token, API requests, DOM and SVG helpers,
// formatting. Plain DOM, no build step. Caller speech is untrusted: it only ever goes in as text.
"use strict";

const GW = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  let token = sessionStorage.getItem("gatewayAdminToken") || "";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "style") node.setAttribute("style", value);
      else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "for") {
        node.setAttribute(key, String(value));
      } else node[key] = value;
    }
  }

  class Forbidden extends Error {}

  async function api(path, options) {
    const headers = Object.assign({ Accept: "application/json" }, (options || {}).headers);
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.status === 403) {
      showTokenForm();
      throw new Forbidden("Not authorised: enter the admin token.");
    }
    if (!response.ok) throw new Error(path + ": " + response.status + " " + (await response.text()));
    return response.json();
  }

  let onToken = null;
  function showTokenForm() {
    const form = document.getElementById("token-form");
    if (form) form.hidden = false;
  }

  function bindTokenForm(callback) {
    onToken = callback;
    const form = document.getElementById("token-form");
    if (!form) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      token = document.getElementById("token").value;
      sessionStorage.setItem("gatewayAdminToken", token);
      form.hidden = true;
      if (onToken) onToken();
    });
  }

  function setStatus(text, error) {
    const status = document.getElementById("status");
    if (!status) return;
    status.textContent = text;
    status.className = error ? "status error" : "status";
  }

  const pad = (n) => String(n).padStart(2, "0");

  function clock(ts) {
    if (!ts) return "–";
    const d = new Date(ts * 1000);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function dateTime(ts) {
    if (!ts) return "–";
    const d = new Date(ts * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + clock(ts);
  }

  // 75.3 → "1:15"; for positions on a call's timeline.
  function offset(s) {
    const whole = Math.max(0, Math.floor(s));
    return Math.floor(whole / 60) + ":" + pad(whole % 60);
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    return Math.floor(s / 60) + " min " + pad(Math.round(s % 60)) + " s";
  }

  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value >= 1000 ? (value / 1000).toFixed(2) + " s" : Math.round(value) + " ms";
  }

  return { el, svg, api, Forbidden, bindTokenForm, setStatus, clock, dateTime, offset, duration, ms };
})();
