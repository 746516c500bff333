/* Charts (Chart.js, served locally): every <canvas data-chart="ID"> is drawn from
 * the JSON in <script id="ID" type="application/json">. Kinds: health (step lines,
 * 1 = healthy), expiry (days left per certificate), series (time series such as
 * requests/s, errors by Proxy-Status type, latency percentiles). */
(function () {
  "use strict";
  if (!window.Chart) return;
  var palette = ["#2457c5", "#c22f2f", "#1a7f45", "#b76e00", "#7b3fc4", "#0e8a93", "#c2417f", "#5a6378"];
  Chart.defaults.font.size = 11;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.animation = false;

  function hhmm(ms) {
    var d = new Date(ms);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }
  var timeAxis = { type: "linear", ticks: { callback: function (v) { return hhmm(v); }, maxTicksLimit: 8 } };

  var builders = {
    health: function (data) {
      return {
        type: "line",
        data: { datasets: data.series.map(function (s, i) {
          return { label: s.label, data: s.data, stepped: true, borderColor: palette[i % palette.length],
                   backgroundColor: palette[i % palette.length], pointRadius: 2, borderWidth: 2 };
        }) },
        options: {
          parsing: false,
          scales: { x: { type: "linear", min: data.start, max: data.end,
                         ticks: { stepSize: 3 * 3600 * 1000, callback: function (v) { return hhmm(v); } } },
                    y: { min: -0.1, max: 1.1, ticks: { stepSize: 1, callback: function (v) { return v === 1 ? "up" : v === 0 ? "down" : ""; } } } },
          plugins: { tooltip: { callbacks: {
            title: function (items) { return items.length ? new Date(items[0].raw.x).toLocaleString() : ""; },
            label: function (item) { return item.dataset.label + ": " + (item.raw.y ? "healthy" : "unhealthy") + (item.raw.reason ? " (" + item.raw.reason + ")" : ""); } } } }
        }
      };
    },
    expiry: function (data) {
      return {
        type: "bar",
        data: { labels: data.rows.map(function (r) { return r.label; }),
                datasets: [{ label: "days until expiry", data: data.rows.map(function (r) { return r.days; }),
                             backgroundColor: data.rows.map(function (r) { return r.days < 7 ? "#c22f2f" : r.days < 30 ? "#e59a1a" : "#2f9e5f"; }) }] },
        options: { indexAxis: "y", plugins: { legend: { display: false },
                   tooltip: { callbacks: { label: function (item) { var r = data.rows[item.dataIndex]; return item.raw + " days (" + r.not_after.slice(0, 10) + ")"; } } } },
                   scales: { x: { min: Math.min(0, Math.min.apply(null, data.rows.map(function (r) { return r.days; }))),
                                  max: Math.min(400, Math.max(30, Math.max.apply(null, data.rows.map(function (r) { return r.days; })))),
                                  title: { display: true, text: "days left (bars cut at 400)" } } } }
      };
    },
    series: function (data) {
      return {
        type: "line",
        data: { datasets: data.series.map(function (s, i) {
          return { label: s.label, data: s.data, borderColor: s.color || palette[i % palette.length],
                   backgroundColor: s.color || palette[i % palette.length], pointRadius: 0, borderWidth: 2, tension: 0.2,
                   fill: false };
        }) },
        options: { parsing: false, interaction: { mode: "nearest", intersect: false },
                   scales: { x: Object.assign({ min: data.start, max: data.end }, timeAxis),
                             y: { beginAtZero: true, title: { display: !!data.unit, text: data.unit || "" } } } }
      };
    }
  };

  var charts = {};
  function draw(canvas) {
    var id = canvas.getAttribute("data-chart");
    var src = document.getElementById(id);
    if (!src) return;
    var data = JSON.parse(src.textContent);
    var build = builders[data.type];
    if (!build) return;
    if (charts[id]) charts[id].destroy();
    charts[id] = new Chart(canvas, build(data));
  }
  function drawAll(root) {
    (root || document).querySelectorAll("canvas[data-chart]").forEach(draw);
  }
  window.SwitchyardCharts = { drawAll: drawAll };
  document.addEventListener("DOMContentLoaded", function () { drawAll(); });
  // Panels refreshed by htmx bring new chart JSON: redraw what they contain.
  document.body.addEventListener("htmx:afterSettle", function () { drawAll(); });
})();
