// Live tail: JSON lines streamed from /api/v1/diagnostics/tail/?output=jsonl (session auth).
(function () {
  "use strict";
  var cfgEl = document.getElementById("tail-config");
  if (!cfgEl) return;
  var cfg = {url: cfgEl.dataset.url};
  var body = document.getElementById("tail-lines"), state = document.getElementById("tail-state");
  var count = 0, source = null, MAX_ROWS = 500;
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  function fmt(v) { return v == null ? "" : Number(v).toFixed(3) + " s"; }
  function add(line) {
    var tr = document.createElement("tr");
    tr.className = "tail-line" + (line.status >= 500 ? " bad" : "");
    tr.dataset.status = line.status;
    tr.dataset.proxyStatus = line.proxy_status || line.code || "";
    tr.dataset.reason = line.reason || "";
    cell(tr, (line.time || line.ts || "").toString().slice(11, 23), "small nowrap");
    cell(tr, line.node, "small"); cell(tr, line.client_addr, "small mono");
    cell(tr, line.method); cell(tr, line.host, "small"); cell(tr, line.path || line.url, "small mono");
    cell(tr, line.status);
    var ending = line.proxy_status || line.code || "";
    cell(tr, line.reason && line.reason !== ending ? ending + " (" + line.reason + ")" : ending, "small");
    cell(tr, fmt(line.duration != null ? line.duration : line.total), "small");
    cell(tr, fmt(line.upstream_first_byte_time), "small");
    cell(tr, line.target || line.upstream_addr || "", "small mono");
    body.insertBefore(tr, body.firstChild);
    while (body.children.length > MAX_ROWS) body.removeChild(body.lastChild);
    document.getElementById("tail-count").textContent = ++count;
  }
  // fetch + JSON lines rather than EventSource: the API's content negotiation answers
  // EventSource's "Accept: text/event-stream" with 406.
  var controller = null;
  function stop(reason) {
    if (controller) { controller.abort(); controller = null; }
    state.textContent = reason || "stopped";
  }
  function handle(ev) {
    if (ev.event === "line") add(ev.data);
    else if (ev.event === "dropped") document.getElementById("tail-dropped").textContent = ev.data.total;
    else if (ev.event === "end") { controller = null; state.textContent = "ended: " + ev.data.reason; }
  }
  function start() {
    if (!cfg.url || !window.fetch) return;
    controller = new AbortController();
    var url = cfg.url + (cfg.url.indexOf("?") < 0 ? "?" : "&") + "output=jsonl";
    state.textContent = "connecting";
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" },
                 signal: controller.signal }).then(function (resp) {
      if (!resp.ok) {
        return resp.text().then(function (t) { stop("error " + resp.status + ": " + t.slice(0, 200)); });
      }
      state.textContent = "streaming";
      var reader = resp.body.getReader(), decoder = new TextDecoder(), buf = "";
      function pump() {
        return reader.read().then(function (r) {
          if (r.done) { if (controller) stop("disconnected"); return; }
          buf += decoder.decode(r.value, { stream: true });
          var parts = buf.split("\n");
          buf = parts.pop();
          parts.forEach(function (p) { if (p.trim()) handle(JSON.parse(p)); });
          return pump();
        });
      }
      return pump();
    }).catch(function (err) { if (err.name !== "AbortError") stop("disconnected: " + err.message); });
  }
  document.getElementById("tail-stop").addEventListener("click", function () { stop(); });
  window.addEventListener("beforeunload", function () { stop(); });
  start();
})();
