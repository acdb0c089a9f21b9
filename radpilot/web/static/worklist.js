// The worklist's live updates, claims and keyboard shortcuts. No library: served from /ui/static.
(function () {
  "use strict";
  var container = document.getElementById("worklist");
  if (!container) { return; }
  var messages = JSON.parse(document.getElementById("messages").textContent);
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var errorBox = document.getElementById("action-error");
  var status = document.getElementById("live-status");
  var selectedUid = null;
  var refreshTimer = null;
  var changedUids = {};

  function rows() { return Array.prototype.slice.call(container.querySelectorAll("tr[data-uid]")); }

  function select(row) {
    rows().forEach(function (r) { r.classList.remove("selected"); r.removeAttribute("aria-selected"); });
    if (!row) { selectedUid = null; return; }
    row.classList.add("selected");
    row.setAttribute("aria-selected", "true");
    selectedUid = row.getAttribute("data-uid");
    row.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
  }

  function selectedRow() {
    return rows().filter(function (r) { return r.getAttribute("data-uid") === selectedUid; })[0] || null;
  }

  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var index = all.indexOf(selectedRow());
    index = index < 0 ? 0 : Math.min(all.length - 1, Math.max(0, index + step));
    select(all[index]);
  }

  function setLive(live) {
    if (!status) { return; }
    status.classList.toggle("live", live);
    var text = status.querySelector(".live-text");
    if (text) { text.textContent = live ? messages["worklist.live"] : messages["worklist.reconnecting"]; }
  }

  function showError(message) {
    errorBox.textContent = messages["worklist.action_failed"].replace("{message}", message);
    errorBox.hidden = false;
  }

  function refresh() {
    refreshTimer = null;
    fetch(container.getAttribute("data-rows-url"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : Promise.reject(new Error(response.statusText)); })
      .then(function (html) {
        container.innerHTML = html;
        rows().forEach(function (r) { if (changedUids[r.getAttribute("data-uid")]) { r.classList.add("changed"); } });
        changedUids = {};
        var again = selectedRow();
        if (again) { select(again); }
        container.dispatchEvent(new CustomEvent("worklist:refreshed"));
      })
      .catch(function () { /* the next event or reconnect refreshes again */ });
  }

  function scheduleRefresh(uid) {
    if (uid) { changedUids[uid] = true; }
    if (refreshTimer === null) { refreshTimer = setTimeout(refresh, 250); }
  }

  function act(action, row) {
    if (!row) { return; }
    var uid = row.getAttribute("data-uid");
    errorBox.hidden = true;
    fetch("/api/worklist/" + encodeURIComponent(uid) + "/" + action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" }
    }).then(function (response) {
      if (!response.ok) {
        return response.json().then(function (body) { showError(body.detail || response.statusText); },
                                    function () { showError(response.statusText); });
      }
      scheduleRefresh(uid);
    });
  }

  container.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    var row = event.target.closest("tr[data-uid]");
    if (button) { act(button.getAttribute("data-action"), row); return; }
    if (row) { select(row); }
  });

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA")) {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    var row = selectedRow();
    switch (event.key) {
      case "j": case "ArrowDown": move(1); break;
      case "k": case "ArrowUp": move(-1); break;
      case "Enter": case "o": if (row) { window.location.href = row.getAttribute("data-href"); } break;
      case "c": act("claim", row); break;
      case "u": act("release", row); break;
      case "/": document.getElementById("search").focus(); break;
      case "?": var keys = document.getElementById("keys"); keys.hidden = !keys.hidden; break;
      default: return;
    }
    event.preventDefault();
  });

  if (window.EventSource) {
    var source = new EventSource("/ui/events");
    source.addEventListener("open", function () { setLive(true); });
    source.addEventListener("ready", function () { setLive(true); });
    source.addEventListener("error", function () { setLive(false); });
    ["study", "analysis", "reading", "reload"].forEach(function (kind) {
      source.addEventListener(kind, function (event) {
        var data = {};
        try { data = JSON.parse(event.data); } catch (e) { data = {}; }
        scheduleRefresh(data.study_instance_uid);
      });
    });
  }
})();
