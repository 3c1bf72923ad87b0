// polycrate serve: progressive enhancement only. Every page reads without this file.
// Follows a running run's log over server-sent events (the <pre id="log" data-events=...>).
(function () {
  "use strict";
  function follow(pre) {
    var url = pre.getAttribute("data-events");
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    var started = false;
    var note = document.getElementById("live-note");
    if (note) note.textContent = "Following the log live.";
    function clearOnce() {
      if (!started) { pre.textContent = ""; started = true; }  // the stream sends the whole log again
    }
    function append(text, cls) {
      var atBottom = window.innerHeight + window.scrollY >= document.body.offsetHeight - 40;
      var span = document.createElement("span");
      if (cls) span.className = cls;
      span.textContent = text + "\n";
      pre.appendChild(span);
      if (atBottom) window.scrollTo(0, document.body.scrollHeight);
    }
    source.addEventListener("step", function (e) {
      clearOnce();
      var d = JSON.parse(e.data);
      append("==> " + d.name, "step-head");
    });
    source.addEventListener("line", function (e) {
      clearOnce();
      append(JSON.parse(e.data).text, "");
    });
    source.addEventListener("gone", function () {
      source.close();
      if (note) note.textContent = "Your session has ended: log in again to follow the run.";
    });
    source.addEventListener("end", function (e) {
      clearOnce();
      var d = JSON.parse(e.data);
      source.close();
      var status = document.getElementById("run-status");
      if (status) {
        status.textContent = d.status + (d.exit_code !== null ? " (exit " + d.exit_code + ")" : "");
        status.setAttribute("data-final", d.status);
      }
      if (note) note.textContent = "The run ended: " + d.status + ".";
      var stop = document.getElementById("stop");
      if (stop) stop.closest("form").remove();
      // the page as it reads now the run has ended: steps, summary, failure, relaunch (not live: no loop)
      window.setTimeout(function () { window.location.reload(); }, 300);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var pre = document.getElementById("log");
    if (pre) follow(pre);
  });
})();
