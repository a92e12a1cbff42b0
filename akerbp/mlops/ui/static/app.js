// mlops ui: draws each page's charts with Plotly from the page's data (<script type="application/json"
// id="page-data">, the Snapshot's dict the page was rendered from). No inline script: the CSP allows this file and
// plotly.min.js only. A chart div gets data-rendered="true" once Plotly has drawn it (the browser tests wait for it).
"use strict";

(function () {
  const CONFIG = { displaylogo: false, responsive: true };
  const ENV_COLORS = { dev: "#1f77b4", test: "#ff7f0e", prod: "#2ca02c" };
  const OUTCOME_COLORS = {
    success: "#2ca02c", completed: "#2ca02c", ok: "#2ca02c",
    failed: "#d62728", error: "#d62728",
    interrupted: "#ff7f0e", rolled_back: "#ff7f0e", not_deployed: "#ff7f0e", not_triggered: "#7f7f7f",
  };
  const ACTION_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star", "cross", "triangle-down",
    "pentagon", "hexagon"];
  const BASE_LAYOUT = {
    margin: { l: 60, r: 20, t: 20, b: 50 },
    height: 320,
    legend: { orientation: "h", y: -0.2 },
    font: { family: "system-ui, sans-serif", size: 12 },
  };

  function envColor(env, i) {
    return ENV_COLORS[env] || ["#9467bd", "#8c564b", "#e377c2"][i % 3];
  }

  function layout(extra) {
    return Object.assign({}, BASE_LAYOUT, extra || {});
  }

  function emptyNote(text) {
    return { annotations: [{ text: text, xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false,
      font: { size: 14, color: "#666" } }], xaxis: { visible: false }, yaxis: { visible: false } };
  }

  function draw(div, traces, lay) {
    return Plotly.newPlot(div, traces, lay, CONFIG).then(function () {
      div.dataset.rendered = "true";
    });
  }

  function metricChart(div, data) {
    const traces = [];
    const envs = data.envs || [];
    envs.forEach(function (env, i) {
      const s = (data.series || {})[env];
      if (!s || !s.version || !s.version.length) return;
      traces.push({ name: env, x: s.version, y: s.value, text: s.model_id, mode: "lines+markers", type: "scatter",
        connectgaps: true, line: { color: envColor(env, i) },
        hovertemplate: "%{text}<br>" + (data.metric || "") + " %{y}<extra>" + env + "</extra>" });
      const live = ((data.live || {})[env] || {}).prediction;
      const at = live ? s.model_id.indexOf(live) : -1;
      if (at >= 0) {
        traces.push({ name: "live in " + env, x: [s.version[at]], y: [s.value[at]], text: [live], mode: "markers",
          type: "scatter", marker: { symbol: "star", size: 16, color: envColor(env, i), line: { width: 1, color: "#000" } },
          hovertemplate: "live: %{text}<br>" + (data.metric || "") + " %{y}<extra>" + env + "</extra>" });
      }
    });
    const lay = traces.length
      ? layout({ xaxis: { title: { text: "version" }, dtick: 1, tickformat: "d" }, yaxis: { title: { text: data.metric } } })
      : layout(emptyNote(data.metric ? "no version has " + data.metric : "no metrics to plot"));
    if (traces.length && traces.every(function (t) { return t.x.length > 30; })) lay.xaxis.dtick = undefined;
    return draw(div, traces, lay);
  }

  function historyChart(div, data) {
    const events = data.events || [];
    const byAction = {};
    events.forEach(function (e) {
      (byAction[e.action] = byAction[e.action] || []).push(e);
    });
    const traces = Object.keys(byAction).sort().map(function (action, i) {
      const list = byAction[action];
      return { name: action, type: "scatter", mode: "markers",
        x: list.map(function (e) { return e.time; }),
        y: list.map(function (e) { return e.model + " / " + (e.env || "-"); }),
        text: list.map(function (e) {
          return [e.action, e.outcome || "", e.model_id || "", e.who ? "by " + e.who : "", e.message || ""]
            .filter(Boolean).join("<br>");
        }),
        marker: { size: 11, symbol: ACTION_SYMBOLS[i % ACTION_SYMBOLS.length],
          color: list.map(function (e) { return OUTCOME_COLORS[(e.outcome || "").toLowerCase()] || "#7f7f7f"; }),
          line: { width: 1, color: "#333" } },
        hovertemplate: "%{x}<br>%{text}<extra></extra>" };
    });
    const rows = new Set(events.map(function (e) { return e.model + " / " + (e.env || "-"); })).size;
    const lay = traces.length
      ? layout({ height: Math.max(260, 60 + 28 * rows), margin: { l: 180, r: 20, t: 20, b: 50 },
        xaxis: { type: "date", title: { text: "time (UTC)" } }, yaxis: { type: "category", automargin: true } })
      : layout(emptyNote("no audit events yet"));
    return draw(div, traces, lay);
  }

  const PERIOD_MS = { hour: 3600e3, day: 86400e3 };

  // One period (hour or day) either side of a lone point: Plotly's own range for it is a millisecond wide.
  function timeAxis(times, by, title) {
    const axis = { type: "date", title: { text: title } };
    if (times.length === 1) {
      const t = Date.parse(times[0]);
      const pad = PERIOD_MS[by] || PERIOD_MS.hour;
      if (!isNaN(t)) axis.range = [new Date(t - pad).toISOString(), new Date(t + pad).toISOString()];
    }
    return axis;
  }

  function barWidth(by) {  // in ms on a date axis: without it a lone bar is a hairline
    return 0.4 * (PERIOD_MS[by] || PERIOD_MS.hour);
  }

  function timeSeries(data) {
    return (data.series && data.series.time) ? data.series : { time: [], calls: [], errors: [], p50_ms: [], p95_ms: [] };
  }

  function callsChart(div, data) {
    const s = timeSeries(data);
    if (!s.time.length) return draw(div, [], layout(emptyNote(data.note || "no calls in this period")));
    return draw(div, [
      { name: "calls", type: "bar", x: s.time, y: s.calls, marker: { color: "#1f77b4" }, width: barWidth(data.by) },
      { name: "errors", type: "bar", x: s.time, y: s.errors, marker: { color: "#d62728" }, width: barWidth(data.by) },
    ], layout({ barmode: "group", xaxis: timeAxis(s.time, data.by, "time (UTC), per " + (data.by || "hour")),
      yaxis: { title: { text: "calls" }, rangemode: "tozero" } }));
  }

  function latencyChart(div, data) {
    const s = timeSeries(data);
    if (!s.time.length) return draw(div, [], layout(emptyNote(data.note || "no calls in this period")));
    return draw(div, [
      { name: "p50", type: "scatter", mode: "lines+markers", x: s.time, y: s.p50_ms, line: { color: "#1f77b4" } },
      { name: "p95", type: "scatter", mode: "lines+markers", x: s.time, y: s.p95_ms, line: { color: "#ff7f0e" } },
    ], layout({ xaxis: timeAxis(s.time, data.by, "time (UTC)"),
      yaxis: { title: { text: "latency (ms)" }, rangemode: "tozero" } }));
  }

  function driftChart(div, data) {
    const name = div.dataset.feature;
    const f = (data.features || {})[name] || { time: [], mean: [], std: [] };
    const time = f.time || [];
    const mean = f.mean || [];
    const std = f.std || [];
    const upper = mean.map(function (m, i) { return m === null || std[i] === null ? null : m + std[i]; });
    const lower = mean.map(function (m, i) { return m === null || std[i] === null ? null : m - std[i]; });
    const traces = [
      { name: "mean - std", type: "scatter", mode: "lines", x: time, y: lower, line: { width: 0 },
        hoverinfo: "skip", showlegend: false },
      { name: "± std", type: "scatter", mode: "lines", x: time, y: upper, line: { width: 0 }, fill: "tonexty",
        fillcolor: "rgba(31, 119, 180, 0.2)", hoverinfo: "skip" },
      { name: "mean", type: "scatter", mode: "lines+markers", x: time, y: mean, line: { color: "#1f77b4" },
        error_y: { type: "data", array: std, visible: true, thickness: 1, width: 3, color: "rgba(31, 119, 180, 0.6)" } },
    ];
    const lay = layout({ xaxis: timeAxis(time, data.by, "time (UTC)"), yaxis: { title: { text: name } } });
    const b = f.baseline;
    if (b && b.mean !== null && b.mean !== undefined && time.length) {
      const ends = lay.xaxis.range || [time[0], time[time.length - 1]];
      traces.push({ name: "training mean (" + (b.model_id || "version " + b.version) + ")", type: "scatter",
        mode: "lines", x: ends, y: [b.mean, b.mean], line: { color: "#d62728", dash: "dash" } });
      if (b.std !== null && b.std !== undefined) {
        traces.push({ name: "training ± std", type: "scatter", mode: "lines", x: ends, y: [b.mean + b.std, b.mean + b.std],
          line: { color: "#d62728", dash: "dot", width: 1 } });
        traces.push({ name: "training - std", type: "scatter", mode: "lines", x: ends, y: [b.mean - b.std, b.mean - b.std],
          line: { color: "#d62728", dash: "dot", width: 1 }, showlegend: false });
      }
    } else if (!b) {
      const why = f.baseline_note || "no training statistics in " + (data.served_model_id || "the served version") +
        "'s metadata";
      // Above the plot at its left: plotly's mode bar takes the top right corner.
      lay.margin = Object.assign({}, BASE_LAYOUT.margin, { t: 34 });
      lay.annotations = [{ text: why, xref: "paper", yref: "paper", x: 0, y: 1, xanchor: "left", yanchor: "bottom",
        yshift: 6, showarrow: false, font: { color: "#666" } }];
    }
    if (!time.length) Object.assign(lay, emptyNote(data.note || "no calls in this period"));
    return draw(div, traces, lay);
  }

  const CHARTS = { metric: metricChart, history: historyChart, calls: callsChart, latency: latencyChart,
    drift: driftChart };

  function main() {
    const divs = document.querySelectorAll("[data-chart]");
    if (!divs.length) return;
    if (typeof Plotly === "undefined") {
      divs.forEach(function (div) { div.textContent = "The charts need /static/plotly.min.js, which did not load."; });
      return;
    }
    const data = JSON.parse(document.getElementById("page-data").textContent);
    divs.forEach(function (div) {
      const chart = CHARTS[div.dataset.chart];
      if (chart) {
        chart(div, data).catch(function (e) { div.textContent = "This chart could not be drawn: " + e; });
      }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
  else main();
})();
