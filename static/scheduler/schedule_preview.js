/* The task form's fire-time preview, live: as the schedule or the timezone is
   edited, ask /api/schedules/preview (with the admin session) for the next
   five fire times, the schedule in words and its warnings, and show them in
   the "next 5 fire times" box (tasks_app/admin.py, TaskAdmin.next_fire_times).
   A static file: the admin's Content-Security-Policy allows no inline script. */
(function () {
  "use strict";

  var DELAY_MS = 300;

  function start() {
    var box = document.querySelector(".schedule-preview");
    var schedule = document.getElementById("id_schedule");
    var zone = document.getElementById("id_timezone");
    if (!box || !schedule || !zone) return;
    var url = box.dataset.url;
    var timer = null;
    var sequence = 0;

    function el(tag, className, text) {
      var node = document.createElement(tag);
      if (className) node.className = className;
      if (text !== undefined) node.textContent = text;
      return node;
    }

    function stamp(iso) {
      // "2026-11-30T09:00:00+01:00" → "2026-11-30 09:00:00 (UTC+01:00)": the
      // wall time of the task's zone, as the server renders it.
      var match = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$/.exec(iso);
      if (!match) return iso;
      return match[1] + " " + match[2] + " (UTC" + (match[3] === "Z" ? "+00:00" : match[3]) + ")";
    }

    function show(nodes, state) {
      box.replaceChildren.apply(box, nodes);
      box.dataset.state = state;
    }

    function render(data) {
      var nodes = [el("p", "schedule-words", "In words: " + data.description + " (" + data.timezone + ")")];
      if (data.next_runs.length) {
        var list = el("ol", "schedule-fires");
        data.next_runs.forEach(function (iso) { list.appendChild(el("li", "", stamp(iso))); });
        nodes.push(list);
      } else {
        nodes.push(el("p", "", "This schedule will not fire again."));
      }
      (data.warnings || []).forEach(function (text) { nodes.push(el("p", "schedule-warning", "⚠ " + text)); });
      show(nodes, "ok");
    }

    function renderError(body) {
      var error = (body && body.error) || {};
      var lines = (error.details || []).map(function (detail) {
        return (detail.field ? detail.field + ": " : "") + detail.message;
      });
      if (!lines.length) lines = [error.message || "The preview is not available."];
      show(lines.map(function (line) { return el("p", "schedule-error", line); }), "error");
    }

    function refresh() {
      var expression = schedule.value.trim();
      var mine = ++sequence;
      if (!expression) {
        show([el("p", "", "No schedule: this task runs only when triggered or by its dependencies.")], "empty");
        return;
      }
      var query = new URLSearchParams({ schedule: expression, timezone: zone.value.trim() || "UTC", count: "5" });
      // A saved task: its own slots (@every counts from its creation) and jitter.
      if (box.dataset.task) query.set("task", box.dataset.task);
      fetch(url + "?" + query.toString(), {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      })
        .then(function (response) {
          return response.json().then(function (body) { return { ok: response.ok, body: body }; });
        })
        .then(function (result) {
          if (mine !== sequence) return; // an answer to an older keystroke
          if (result.ok) render(result.body);
          else renderError(result.body);
        })
        .catch(function () {
          if (mine === sequence) show([el("p", "schedule-error", "The preview is not available right now.")], "error");
        });
    }

    function later() {
      clearTimeout(timer);
      timer = setTimeout(refresh, DELAY_MS);
    }

    schedule.addEventListener("input", later);
    zone.addEventListener("input", later);
    zone.addEventListener("change", later);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
