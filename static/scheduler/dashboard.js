/*
 * The admin dashboard: draws the figures of /admin/dashboard/data.json as SVG
 * charts, then asks for them again every `refresh_seconds`. No library: the
 * page must work on a machine that reaches nothing but the scheduler.
 */
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var STATUS_COLOURS = {
    completed: "#2da44e",
    failed: "#cf222e",
    timeout: "#e16f24",
    cancelled: "#8c959f",
    skipped: "#c9d1d9",
    running: "#0969da",
    dispatched: "#8250df",
    pending: "#d4a72c",
    delayed: "#e9d8a6",
  };
  var LAG_COLOURS = { p50: "#0969da", p95: "#e16f24" };
  var WORKER_COLOURS = { active: "#2da44e", draining: "#d4a72c", down: "#cf222e" };
  var MINUTE = 60000;

  var root = document.getElementById("content-main");
  // The last hour first: over 24 h the minutes of today are a sliver.
  var state = { data: null, rangeMinutes: 60, timer: null, stopped: false };

  // Small helpers -----------------------------------------------------------

  function svgEl(tag, attrs, parent) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (key) {
      node.setAttribute(key, attrs[key]);
    });
    if (parent) parent.appendChild(node);
    return node;
  }

  function el(tag, attrs, text, parent) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      node.setAttribute(key, attrs[key]);
    });
    if (text !== undefined && text !== null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function svgText(parent, x, y, text, cls, anchor) {
    var node = svgEl("text", { x: x, y: y, class: cls || "axis", "text-anchor": anchor || "start" }, parent);
    node.textContent = text;
    return node;
  }

  function svgRoot(width, height, label) {
    return svgEl("svg", {
      viewBox: "0 0 " + width + " " + height,
      role: "img",
      "aria-label": label,
      preserveAspectRatio: "xMidYMid meet",
    });
  }

  function number(n) {
    return n === null || n === undefined ? "—" : Number(n).toLocaleString();
  }

  function percent(rate, digits) {
    return rate === null || rate === undefined ? "—" : (rate * 100).toFixed(digits === undefined ? 1 : digits) + " %";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 10) return seconds.toFixed(2) + " s";
    if (seconds < 120) return seconds.toFixed(1) + " s";
    if (seconds < 7200) return (seconds / 60).toFixed(1) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  // An axis label: round values stay short (2 s, 500 ms).
  function durationTick(seconds) {
    if (seconds === 0) return "0";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 120) return Number(seconds.toFixed(2)) + " s";
    return Number((seconds / 60).toFixed(1)) + " min";
  }

  // How long ago, to the second: heartbeats come every few seconds.
  function age(seconds) {
    if (seconds < 120) return Math.round(seconds) + " s ago";
    if (seconds < 7200) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " days ago";
  }

  function clock(ms, withSeconds) {
    var options = { hour: "2-digit", minute: "2-digit", hour12: false };
    if (withSeconds) options.second = "2-digit";
    return new Date(ms).toLocaleTimeString([], options);
  }

  // Thresholds of the success-rate colours: green, amber below 95 %, red below 80 %.
  function rateTone(rate) {
    if (rate === null || rate === undefined) return "";
    return rate >= 0.95 ? "good" : rate >= 0.8 ? "warn" : "bad";
  }

  function sum(counts) {
    return Object.keys(counts).reduce(function (total, key) {
      return total + counts[key];
    }, 0);
  }

  // 0 .. top in a few round steps (1, 2 or 5 times a power of ten).
  function niceScale(max, steps, integers) {
    if (!(max > 0)) max = integers ? 1 : 0.001;
    var raw = max / steps;
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (f) { return f * power; }).find(function (s) { return s >= raw; });
    if (integers) step = Math.max(1, Math.round(step));
    var top = Math.ceil(max / step - 1e-9) * step;
    var ticks = [];
    for (var value = 0; value <= top + step / 2; value += step) ticks.push(value);
    return { top: top, ticks: ticks };
  }

  function yAxis(svg, box, scale, format) {
    scale.ticks.forEach(function (value) {
      var y = box.y(value);
      svgEl("line", { x1: box.left, x2: box.right, y1: y, y2: y, class: value === 0 ? "baseline" : "grid" }, svg);
      svgText(svg, box.left - 6, y + 4, format(value), "axis", "end");
    });
  }

  // Vertical ticks at round local times between start and end (ms).
  function timeAxis(svg, box, start, end, everyMinutes, x) {
    for (var t = Math.ceil(start / MINUTE) * MINUTE; t <= end; t += MINUTE) {
      var date = new Date(t);
      if ((date.getHours() * 60 + date.getMinutes()) % everyMinutes !== 0) continue;
      var px = x(t);
      svgEl("line", { x1: px, x2: px, y1: box.bottom, y2: box.bottom + 4, class: "baseline" }, svg);
      svgText(svg, px, box.bottom + 17, clock(t), "axis", "middle");
    }
  }

  function plotBox(width, height, margin) {
    var box = {
      left: margin.left,
      right: width - margin.right,
      top: margin.top,
      bottom: height - margin.bottom,
    };
    box.width = box.right - box.left;
    box.height = box.bottom - box.top;
    return box;
  }

  function emptyNote(svg, box, text) {
    svgText(svg, (box.left + box.right) / 2, (box.top + box.bottom) / 2, text, "empty", "middle");
  }

  // Key figures -------------------------------------------------------------

  function drawKpis(data) {
    var runs = data.runs_24h;
    var lag = data.dispatch_lag;
    var workers = data.workers;
    var waiting = data.queues.reduce(function (n, q) { return n + q.pending + q.dispatched; }, 0);
    var running = data.queues.reduce(function (n, q) { return n + q.running; }, 0);
    var rate = data.success_rate.last_24h;
    var runsUrl = root.dataset.runsUrl;
    var tiles = [
      {
        label: "Runs, last 24 h",
        value: number(runs.total),
        note: number(runs.failed + runs.timeout) + " failed or timed out",
        href: runsUrl,
      },
      {
        label: "Success rate, 24 h",
        value: percent(rate),
        note: "of " + number(data.success_rate.finished_24h) + " finished",
        tone: rateTone(rate),
        href: runsUrl + "?status__exact=failed",
      },
      {
        label: "Dispatch lag p50 / p95",
        value: duration(lag.p50) + " / " + duration(lag.p95),
        note: "last " + lag.current_minutes + " min",
      },
      {
        label: "Waiting in queues",
        value: number(waiting),
        note: number(running) + " running",
        href: runsUrl + "?status__exact=pending",
      },
      {
        label: "Workers active",
        value: number(workers.active),
        note: number(workers.draining) + " draining, " + number(workers.down) + " down",
        tone: workers.active > 0 ? "" : "bad",
        href: root.dataset.workersUrl,
      },
      {
        label: "Tasks active",
        value: number(data.tasks.active),
        note: number(data.tasks.paused) + " paused",
      },
      {
        label: "Alerts sent, 24 h",
        value: number(data.notifications.sent),
        note: number(data.notifications.failed) + " failed, " + number(data.notifications.pending) + " pending",
        tone: data.notifications.failed > 0 ? "bad" : "",
        href: root.dataset.notificationsUrl,
      },
    ];
    var box = document.getElementById("dash-kpis");
    box.replaceChildren();
    tiles.forEach(function (tile) {
      var node = el(tile.href ? "a" : "div", { class: "dash-kpi " + (tile.tone || "") }, null, box);
      if (tile.href) node.setAttribute("href", tile.href);
      el("span", { class: "dash-kpi-label" }, tile.label, node);
      el("span", { class: "dash-kpi-value" }, tile.value, node);
      el("span", { class: "dash-kpi-note" }, tile.note, node);
    });
  }

  // Runs per minute ---------------------------------------------------------

  function drawLegend(data) {
    var box = document.getElementById("dash-legend");
    box.replaceChildren();
    data.runs_per_minute.statuses.forEach(function (status) {
      var item = el("span", { class: "dash-legend-item" }, null, box);
      el("i", { style: "background:" + STATUS_COLOURS[status] }, null, item);
      item.appendChild(document.createTextNode(status + " " + number(data.runs_24h[status])));
    });
  }

  function drawRuns(data, minutes) {
    var series = data.runs_per_minute;
    var end = Date.parse(series.end);
    var start = end - minutes * MINUTE;
    var columns = [];
    var maxTotal = 0;
    series.points.forEach(function (point) {
      var t = Date.parse(point.minute);
      if (t < start || t >= end) return;
      var total = sum(point.counts);
      maxTotal = Math.max(maxTotal, total);
      columns.push({ index: Math.round((t - start) / MINUTE), t: t, counts: point.counts, total: total });
    });

    var width = 1200;
    var height = 220;
    var box = plotBox(width, height, { left: 48, right: 12, top: 10, bottom: 26 });
    var scale = niceScale(maxTotal, 4, true);
    box.y = function (v) { return box.bottom - (v / scale.top) * box.height; };
    var slot = box.width / minutes;
    var barWidth = slot > 3 ? slot * 0.8 : slot;
    var x = function (t) { return box.left + ((t - start) / MINUTE) * slot; };

    var svg = svgRoot(width, height, "Runs per minute by status, last " + minutes / 60 + " h");
    yAxis(svg, box, scale, function (v) { return number(v); });
    timeAxis(svg, box, start, end, minutes >= 1440 ? 180 : minutes >= 360 ? 60 : 10, x);

    var paths = {};
    series.statuses.forEach(function (status) { paths[status] = ""; });
    columns.forEach(function (column) {
      var below = 0;
      var left = box.left + column.index * slot + (slot - barWidth) / 2;
      series.statuses.forEach(function (status) {
        var n = column.counts[status] || 0;
        if (!n) return;
        var y0 = box.y(below);
        var y1 = box.y(below + n);
        paths[status] += "M" + left.toFixed(2) + "," + y0.toFixed(2) + "V" + y1.toFixed(2) +
          "h" + barWidth.toFixed(2) + "V" + y0.toFixed(2) + "Z";
        below += n;
      });
    });
    series.statuses.forEach(function (status) {
      if (paths[status]) svgEl("path", { d: paths[status], fill: STATUS_COLOURS[status], class: "bars bars-" + status }, svg);
    });
    if (!columns.length) emptyNote(svg, box, "No runs in this period");

    var byIndex = {};
    columns.forEach(function (column) { byIndex[column.index] = column; });
    var highlight = svgEl("rect", { x: 0, y: box.top, width: Math.max(slot, 2), height: box.height, class: "hover" }, svg);
    var overlay = svgEl("rect", { x: box.left, y: box.top, width: box.width, height: box.height, class: "overlay" }, svg);
    var container = document.getElementById("chart-runs");
    var tip = attachTooltip(container, svg, overlay, function (px) {
      var index = Math.floor((px - box.left) / slot);
      if (index < 0 || index >= minutes) return null;
      highlight.setAttribute("x", box.left + index * slot - Math.max(0, 2 - slot) / 2);
      var column = byIndex[index];
      var t = start + index * MINUTE;
      var lines = [clock(t) + "–" + clock(t + MINUTE)];
      if (!column) {
        lines.push("no runs");
      } else {
        series.statuses.forEach(function (status) {
          if (column.counts[status]) lines.push(status + ": " + number(column.counts[status]));
        });
      }
      return lines;
    }, highlight);
    container.replaceChildren(svg, tip);
  }

  // A tooltip following the pointer over `overlay`; `describe(x)` gives its lines.
  // Returns the tooltip element, for the caller to put beside the chart.
  function attachTooltip(container, svg, overlay, describe, highlight) {
    var tip = el("div", { class: "dash-tip", hidden: "" });
    function hide() {
      tip.hidden = true;
      if (highlight) highlight.classList.remove("shown");
    }
    overlay.addEventListener("mousemove", function (event) {
      var matrix = svg.getScreenCTM();
      if (!matrix) return;
      var point = new DOMPoint(event.clientX, event.clientY).matrixTransform(matrix.inverse());
      var lines = describe(point.x);
      if (!lines) return hide();
      tip.replaceChildren();
      lines.forEach(function (line, i) { el(i ? "div" : "strong", {}, line, tip); });
      tip.hidden = false;
      if (highlight) highlight.classList.add("shown");
      var bounds = container.getBoundingClientRect();
      var left = event.clientX - bounds.left + 14;
      if (left + tip.offsetWidth > bounds.width) left = event.clientX - bounds.left - tip.offsetWidth - 14;
      tip.style.left = Math.max(0, left) + "px";
      tip.style.top = Math.max(0, event.clientY - bounds.top - 10) + "px";
    });
    overlay.addEventListener("mouseleave", hide);
    return tip;
  }

  // Success rate per hour ---------------------------------------------------

  function drawSuccess(data) {
    var hours = data.success_rate.hourly;
    var width = 600;
    var height = 220;
    var box = plotBox(width, height, { left: 44, right: 10, top: 10, bottom: 26 });
    box.y = function (v) { return box.bottom - v * box.height; };
    var svg = svgRoot(width, height, "Success rate per hour, last 24 h");
    yAxis(svg, box, { ticks: [0, 0.25, 0.5, 0.75, 1], top: 1 }, function (v) { return v * 100 + " %"; });
    var slot = box.width / hours.length;
    var any = false;
    hours.forEach(function (hour, i) {
      var start = Date.parse(hour.hour);
      var x = box.left + i * slot + slot * 0.12;
      var w = slot * 0.76;
      var label = clock(start) + "–" + clock(start + 3600000) + ": ";
      var bar;
      if (hour.rate === null) {
        bar = svgEl("rect", { x: x, y: box.bottom - 2, width: w, height: 2, class: "nodata" }, svg);
        label += "no finished runs";
      } else {
        any = true;
        var tone = STATUS_COLOURS[rateTone(hour.rate) === "good" ? "completed" : rateTone(hour.rate) === "warn" ? "pending" : "failed"];
        var top = box.y(hour.rate);
        bar = svgEl("rect", { x: x, y: top, width: w, height: Math.max(box.bottom - top, 1), fill: tone, class: "rate" }, svg);
        label += percent(hour.rate) + " of " + number(hour.finished) + " finished";
      }
      svgEl("title", {}, bar).textContent = label;
      if (i % 6 === 0) svgText(svg, x + w / 2, box.bottom + 17, clock(start), "axis", "middle");
    });
    if (!any) emptyNote(svg, box, "No finished runs in the last 24 h");
    document.getElementById("chart-success").replaceChildren(svg);
  }

  // Dispatch lag ------------------------------------------------------------

  function drawLag(data) {
    var lag = data.dispatch_lag;
    var end = Date.parse(lag.end);
    var start = Date.parse(lag.start);
    var points = lag.per_minute.map(function (p) {
      return { t: Date.parse(p.minute), p50: p.p50, p95: p.p95, samples: p.samples };
    });
    var width = 600;
    var height = 220;
    var box = plotBox(width, height, { left: 56, right: 10, top: 22, bottom: 26 });
    var maxLag = points.reduce(function (m, p) { return Math.max(m, p.p95); }, 0);
    var scale = niceScale(maxLag, 4, false);
    box.y = function (v) { return box.bottom - (v / scale.top) * box.height; };
    var x = function (t) { return box.left + ((t - start) / (end - start)) * box.width; };
    var svg = svgRoot(width, height, "Dispatch lag p50 and p95 per minute, last hour");
    yAxis(svg, box, scale, durationTick);
    timeAxis(svg, box, start, end, 10, x);
    ["p95", "p50"].forEach(function (key) {
      var d = "";
      var previous = null;
      points.forEach(function (p) {
        var px = x(p.t + MINUTE / 2);
        var py = box.y(p[key]);
        d += (previous !== null && p.t - previous === MINUTE ? "L" : "M") + px.toFixed(1) + "," + py.toFixed(1);
        previous = p.t;
      });
      if (d) svgEl("path", { d: d, stroke: LAG_COLOURS[key], class: "line" }, svg);
      points.forEach(function (p) {
        var dot = svgEl("circle", { cx: x(p.t + MINUTE / 2), cy: box.y(p[key]), r: 2.6, fill: LAG_COLOURS[key] }, svg);
        svgEl("title", {}, dot).textContent =
          clock(p.t) + " " + key + ": " + duration(p[key]) + " (" + number(p.samples) + " runs)";
      });
    });
    var keyX = box.right - 150;
    ["p50", "p95"].forEach(function (key, i) {
      var kx = keyX + i * 75;
      svgEl("line", { x1: kx, x2: kx + 16, y1: 10, y2: 10, stroke: LAG_COLOURS[key], class: "line" }, svg);
      svgText(svg, kx + 21, 14, key, "axis");
    });
    if (!points.length) emptyNote(svg, box, "No runs started in the last hour");
    var container = document.getElementById("chart-lag");
    container.replaceChildren(svg);
    var note = lag.samples >= lag.sample_limit ? " (newest " + number(lag.sample_limit) + " runs)" : "";
    el("p", { class: "dash-caption" },
      "Last " + lag.current_minutes + " min: p50 " + duration(lag.p50) + ", p95 " + duration(lag.p95) +
      " · " + number(lag.samples) + " runs sampled" + note, container);
  }

  // Queues ------------------------------------------------------------------

  var QUEUE_PARTS = ["running", "dispatched", "pending", "delayed"];

  function drawQueues(data) {
    var queues = data.queues;
    var container = document.getElementById("chart-queues");
    var legend = el("div", { class: "dash-legend" });
    QUEUE_PARTS.forEach(function (part) {
      var item = el("span", { class: "dash-legend-item" }, null, legend);
      el("i", { style: "background:" + STATUS_COLOURS[part] }, null, item);
      item.appendChild(document.createTextNode(part));
    });
    var rowHeight = 30;
    var width = 600;
    var height = Math.max(1, queues.length) * rowHeight + 12;
    var svg = svgRoot(width, height, "Runs waiting or running per queue");
    var labelWidth = 130;
    var countWidth = 70;
    var barSpace = width - labelWidth - countWidth;
    var max = queues.reduce(function (m, q) {
      return Math.max(m, QUEUE_PARTS.reduce(function (n, part) { return n + q[part]; }, 0));
    }, 0);
    queues.forEach(function (q, i) {
      var y = 6 + i * rowHeight;
      var name = q.queue.length > 18 ? q.queue.slice(0, 17) + "…" : q.queue;
      svgText(svg, labelWidth - 8, y + 19, name, "label", "end");
      svgEl("rect", { x: labelWidth, y: y + 4, width: barSpace, height: rowHeight - 8, class: "track" }, svg);
      var offset = labelWidth;
      var total = 0;
      QUEUE_PARTS.forEach(function (part) {
        var n = q[part];
        if (!n) return;
        var w = (n / max) * barSpace;
        var rect = svgEl("rect", { x: offset, y: y + 4, width: Math.max(w, 1.5), height: rowHeight - 8, fill: STATUS_COLOURS[part] }, svg);
        svgEl("title", {}, rect).textContent = q.queue + ": " + number(n) + " " + part;
        offset += w;
        total += n;
      });
      svgText(svg, labelWidth + barSpace + 8, y + 19, number(total), "label");
    });
    if (!queues.length) svgText(svg, width / 2, 24, "No runs waiting or running", "empty", "middle");
    container.replaceChildren(legend, svg);
  }

  // Workers -----------------------------------------------------------------

  function drawWorkers(data) {
    var workers = data.workers;
    var container = document.getElementById("dash-workers");
    container.replaceChildren();
    var summary = el("p", { class: "dash-worker-summary" }, null, container);
    ["active", "draining", "down"].forEach(function (status) {
      var badge = el("span", { class: "dash-badge" }, null, summary);
      el("i", { style: "background:" + WORKER_COLOURS[status] }, null, badge);
      badge.appendChild(document.createTextNode(number(workers[status]) + " " + status));
    });
    if (!workers.list.length) {
      el("p", { class: "dash-caption" }, "No worker has reported in the last 24 h.", container);
      return;
    }
    var scroll = el("div", { class: "dash-table" }, null, container);
    var table = el("table", {}, null, scroll);
    var head = el("tr", {}, null, el("thead", {}, null, table));
    ["Worker", "Status", "Heartbeat", "Runs", "Load"].forEach(function (title) { el("th", {}, title, head); });
    var body = el("tbody", {}, null, table);
    workers.list.forEach(function (w) {
      var row = el("tr", {}, null, body);
      var name = el("td", {}, null, row);
      el("a", { href: w.url, title: w.hostname || w.id }, w.id, name);
      var status = el("td", {}, null, row);
      el("i", { class: "dot", style: "background:" + (WORKER_COLOURS[w.status] || "#8c959f") }, null, status);
      status.appendChild(document.createTextNode(w.status));
      var heartbeat = w.heartbeat_age_seconds;
      var ageCell = el("td", {}, w.heartbeat_age_seconds === null ? "never" : age(w.heartbeat_age_seconds), row);
      if (w.status !== "down" && heartbeat !== null) {
        if (heartbeat > workers.dead_after_seconds) ageCell.className = "bad";
        else if (heartbeat > 2 * workers.heartbeat_seconds) ageCell.className = "warn";
      }
      el("td", { class: "num" }, number(w.current_task_count) + " / " + number(w.max_concurrent_tasks), row);
      el("td", { class: "num" }, w.load_percentage === null ? "—" : Math.round(w.load_percentage) + " %", row);
    });
    if (workers.total > workers.list.length) {
      el("p", { class: "dash-caption" },
        "Showing " + number(workers.list.length) + " of " + number(workers.total) + " (active and draining first, down ones from the last 24 h).",
        container);
    }
  }

  // Refresh -----------------------------------------------------------------

  function render(data) {
    state.data = data;
    drawKpis(data);
    drawLegend(data);
    drawRuns(data, state.rangeMinutes);
    drawSuccess(data);
    drawLag(data);
    drawQueues(data);
    drawWorkers(data);
    document.getElementById("dash-updated").textContent =
      "Updated " + clock(Date.parse(data.generated_at), true) + " · refreshes every " + data.refresh_seconds + " s";
    root.dataset.rendered = String(Date.now());
  }

  function setState(text, tone) {
    var node = document.getElementById("dash-state");
    node.textContent = text;
    node.className = "dash-state " + (tone || "");
  }

  function schedule() {
    clearTimeout(state.timer);
    if (state.stopped || !state.data) return;
    state.timer = setTimeout(refresh, state.data.refresh_seconds * 1000);
  }

  function refresh() {
    if (document.hidden) return; // picked up again on visibilitychange
    fetch(root.dataset.url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          state.stopped = true;
          setState("Your session has ended: reload the page to log in again.", "bad");
          return null;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        if (!data) return;
        render(data);
        setState("");
      })
      .catch(function (error) {
        setState("Refresh failed (" + error.message + "); showing older figures.", "warn");
      })
      .then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && !state.stopped) refresh();
  });

  document.querySelectorAll(".dash-range button").forEach(function (button) {
    button.addEventListener("click", function () {
      state.rangeMinutes = Number(button.dataset.minutes);
      document.querySelectorAll(".dash-range button").forEach(function (b) {
        b.classList.toggle("selected", b === button);
      });
      if (state.data) drawRuns(state.data, state.rangeMinutes);
    });
  });

  render(JSON.parse(document.getElementById("dashboard-data").textContent));
  schedule();
})();
