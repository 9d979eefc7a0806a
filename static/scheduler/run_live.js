/*
 * Follows a run that is not final yet from its change page: polls the run's
 * live endpoint and updates status, worker, error and output in place (the
 * output boxes keep to the bottom, as `tail -f` does, unless scrolled up).
 * Once the run is final the page reloads, so every field shows its last value.
 */
(function () {
  "use strict";

  var banner = document.getElementById("run-live");
  if (!banner) return;
  var text = banner.querySelector(".run-live-text");
  var url = banner.dataset.url;
  var delay = 1500;
  var failures = 0;

  function readonly(name) {
    return document.querySelector(".field-" + name + " .readonly");
  }

  function say(message, tone) {
    text.textContent = message;
    banner.className = "run-live " + (tone || "");
  }

  function setText(name, value) {
    var node = readonly(name);
    if (node) node.textContent = value === null || value === undefined || value === "" ? "-" : String(value);
  }

  function setStatus(run) {
    var node = readonly("status_label");
    if (!node) return;
    var label = document.createElement("span");
    label.style.color = run.status_colour;
    label.style.fontWeight = "bold";
    label.textContent = run.status_label;
    node.replaceChildren(label);
    if (run.cancel_requested && !run.is_final) node.append(" (cancel requested)");
  }

  function setOutput(name, value, truncated) {
    var node = readonly(name);
    if (!node) return;
    if (!value) {
      node.textContent = "—";
      return;
    }
    var pre = node.querySelector("pre");
    if (!pre) {
      pre = document.createElement("pre");
      node.replaceChildren(pre);
    }
    pre.classList.add("run-output");
    var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = (truncated ? "… (earlier output cut)\n" : "") + value;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  function apply(run) {
    setStatus(run);
    setText("worker_id", run.worker_id);
    setOutput("error_block", run.error_message, false);
    setOutput("stdout_block", run.stdout, run.stdout_truncated);
    setOutput("stderr_block", run.stderr, run.stderr_truncated);
  }

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 404) {
          say("This run no longer exists (its task was deleted).", "bad");
          return null;
        }
        if (response.status === 401 || response.status === 403) {
          say("Your session has ended: reload the page to log in again.", "bad");
          return null;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (run) {
        if (!run) return;
        failures = 0;
        apply(run);
        if (run.is_final) {
          say("The run has finished (" + run.status_label.toLowerCase() + "); loading its final state…", "done");
          window.location.reload();
          return;
        }
        delay = (run.poll_seconds || 1.5) * 1000;
        say("Following this run live (" + run.status_label.toLowerCase() + "): status and output update by themselves.");
        setTimeout(poll, delay);
      })
      .catch(function (error) {
        failures += 1;
        say("Lost contact with the server (" + error.message + "); retrying…", "warn");
        setTimeout(poll, Math.min(delay * Math.pow(2, failures), 30000));
      });
  }

  poll();
})();
