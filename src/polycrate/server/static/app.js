// polycrate serve: progressive enhancement only. Every page reads without this file.
// Follows a running run's log over server-sent events (the <pre id="log" data-events=...>).
(function () {
  "use strict";
  // SGR codes to spans with our fixed classes (as server/logview.py does); the text goes in as textContent,
  // so nothing in a log line ever becomes markup
  var SGR = /\x1b\[([0-9;]{0,40})m/g;
  var OTHER = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
  var style = {fg: null, bg: null, flags: {}};
  function applySgr(params) {
    var codes = params ? params.split(";").map(function (c) { return parseInt(c, 10) || 0; }) : [0];
    for (var i = 0; i < codes.length; i++) {
      var c = codes[i];
      if (c === 0) { style = {fg: null, bg: null, flags: {}}; }
      else if (c >= 1 && c <= 4) { style.flags[["", "bold", "dim", "italic", "underline"][c]] = true; }
      else if (c === 22) { delete style.flags.bold; delete style.flags.dim; }
      else if (c === 23) { delete style.flags.italic; }
      else if (c === 24) { delete style.flags.underline; }
      else if (c >= 30 && c <= 37) { style.fg = "fg" + (c - 30); }
      else if (c >= 90 && c <= 97) { style.fg = "fg" + (c - 82); }
      else if (c >= 40 && c <= 47) { style.bg = "bg" + (c - 40); }
      else if (c >= 100 && c <= 107) { style.bg = "bg" + (c - 92); }
      else if (c === 39) { style.fg = null; }
      else if (c === 49) { style.bg = null; }
      else if (c === 38 || c === 48) { i += codes[i + 1] === 5 ? 2 : 4; }
    }
  }
  function classes() {
    var names = [];
    if (style.fg) names.push("ansi-" + style.fg);
    if (style.bg) names.push("ansi-" + style.bg);
    Object.keys(style.flags).sort().forEach(function (f) { names.push("ansi-" + f); });
    return names.join(" ");
  }
  function lineElement(text) {
    var line = document.createElement("span");
    line.className = "ln";
    var position = 0, match;
    function piece(upto) {
      var part = text.slice(position, upto).replace(OTHER, "");
      if (!part) return;
      var span = document.createElement("span");
      var cls = classes();
      if (cls) span.className = cls;
      span.textContent = part;
      line.appendChild(span);
    }
    SGR.lastIndex = 0;
    while ((match = SGR.exec(text)) !== null) {
      piece(match.index);
      position = SGR.lastIndex;
      applySgr(match[1]);
    }
    piece(text.length);
    line.appendChild(document.createTextNode("\n"));
    return line;
  }
  function searchLoaded(pre) {
    var input = document.getElementById("log-search-text");
    var only = document.getElementById("log-only-hits");
    var count = document.getElementById("log-search-count");
    if (!input || !count) return;
    function apply() {
      var needle = input.value.toLowerCase();
      var lines = pre.querySelectorAll(".ln"), hits = 0;
      for (var i = 0; i < lines.length; i++) {
        var hit = needle !== "" && lines[i].textContent.toLowerCase().indexOf(needle) >= 0;
        lines[i].classList.toggle("hit", hit);
        if (hit) hits++;
      }
      pre.classList.toggle("only-hits", !!(only && only.checked && needle !== ""));
      count.textContent = needle === "" ? "" : hits + " of the " + lines.length + " lines shown match";
      count.setAttribute("data-hits", String(hits));
    }
    input.addEventListener("input", apply);
    if (only) only.addEventListener("change", apply);
    pre.addEventListener("log-appended", apply);
    apply();
  }
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
      var span;
      if (cls) {
        span = document.createElement("span");
        span.className = cls;
        span.textContent = text + "\n";
      } else {
        span = lineElement(text);
      }
      pre.appendChild(span);
      pre.dispatchEvent(new Event("log-appended"));
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
  // a queued run (team mode): once a worker has taken it (or it was stopped) it has a record, and the page
  // that shows it live, or as it ended, takes this one's place
  function awaitWorker(hint) {
    var url = hint.getAttribute("data-poll");
    function check() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) {
          if (r.status === 404) {  // taken by a worker that has not opened its record yet: a moment
            window.setTimeout(check, 2000);
            return null;
          }
          if (!r.ok) {  // a session that ended, a role taken away: say so, stop asking
            hint.textContent = "No longer following this run (" + r.status + "): reload the page.";
            return null;
          }
          return r.json().then(function (d) {
            if (d.status !== "queued") window.location.reload();
            else window.setTimeout(check, 2000);
          });
        })
        .catch(function () { window.setTimeout(check, 5000); });
    }
    window.setTimeout(check, 2000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.body.classList.add("js");
    var pre = document.getElementById("log");
    if (pre) { follow(pre); searchLoaded(pre); }
    var hint = document.getElementById("queued-wait");
    if (hint) awaitWorker(hint);
  });
})();
