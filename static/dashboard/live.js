/* Live updates over /ws/live/. The server sends {"type": "state", ...}
 * whenever node status, target health, the current version or traffic change.
 * This script (1) fills elements marked data-live="key" with values of the message,
 * (2) fires DOM events that htmx panels listen to (hx-trigger="live-nodes from:body")
 * so they re-fetch themselves, and (3) hands traffic figures to the charts. */
(function () {
  "use strict";
  var pill = document.getElementById("live-pill");
  var last = {};
  var delay = 500;

  function setPill(on, text) {
    if (!pill) return;
    pill.classList.toggle("on", on);
    pill.textContent = text;
  }

  function fill(values) {
    Object.keys(values || {}).forEach(function (key) {
      document.querySelectorAll('[data-live="' + key + '"]').forEach(function (el) {
        var v = values[key];
        var text = v === null || v === undefined ? "–" : String(v);
        if (el.textContent !== text) {
          el.textContent = text;
          el.classList.remove("flash"); void el.offsetWidth; el.classList.add("flash");
        }
      });
    });
  }

  function changed(section, msg) {
    var now = JSON.stringify(msg[section]);
    var was = last[section];
    last[section] = now;
    return was !== undefined && was !== now;
  }

  function handle(msg) {
    if (msg.type !== "state") return;
    fill(msg.values);
    ["nodes", "health", "config", "traffic"].forEach(function (section) {
      if (changed(section, msg)) {
        document.body.dispatchEvent(new CustomEvent("live-" + section, { detail: msg[section] }));
      }
    });
    document.dispatchEvent(new CustomEvent("switchyard:live", { detail: msg }));
  }

  function connect() {
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    var ws;
    try { ws = new WebSocket(proto + location.host + "/ws/live/"); } catch (e) { return retry(); }
    ws.onopen = function () { delay = 500; setPill(true, "live"); };
    ws.onmessage = function (ev) {
      try { handle(JSON.parse(ev.data)); } catch (e) { console.error("live:", e); }
    };
    ws.onclose = function () { setPill(false, "offline"); retry(); };
  }

  function retry() {
    setTimeout(connect, delay + Math.random() * delay);
    delay = Math.min(delay * 2, 15000);
  }

  var toggle = document.getElementById("menu-toggle");
  if (toggle) toggle.addEventListener("click", function () {
    var open = document.getElementById("main-nav").classList.toggle("open");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  });
  document.addEventListener("click", function (ev) {
    var el = ev.target.closest("[data-confirm]");
    if (el && !window.confirm(el.getAttribute("data-confirm"))) ev.preventDefault();
  });

  if (document.body.hasAttribute("data-live-enabled")) connect();
})();
