// Administration pages: C-ECHO and job retry buttons. No library: served from /ui/static.
(function () {
  "use strict";
  var messages = JSON.parse(document.getElementById("messages").textContent);
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var errorBox = document.getElementById("action-error");

  function post(url) {
    return fetch(url, { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf, "Accept": "application/json" } })
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; },
                                    function () { return { ok: false, body: { detail: response.statusText } }; });
      });
  }

  document.addEventListener("click", function (event) {
    var echoButton = event.target.closest("button[data-echo]");
    if (echoButton) {
      var result = echoButton.parentNode.querySelector(".result");
      result.textContent = "…";
      result.className = "result";
      post("/api/admin/nodes/" + encodeURIComponent(echoButton.getAttribute("data-echo")) + "/echo").then(function (answer) {
        var body = answer.body;
        var ok = answer.ok && body.ok;
        result.className = "result " + (ok ? "ok" : "failed");
        result.textContent = ok ? messages.ok.replace("{ms}", body.ms)
                                : messages.failed.replace("{message}", body.message || body.detail || "");
      });
      return;
    }
    var retryButton = event.target.closest("button[data-retry]");
    if (retryButton) {
      post("/api/jobs/" + encodeURIComponent(retryButton.getAttribute("data-retry")) + "/retry").then(function (answer) {
        if (!answer.ok) {
          errorBox.textContent = answer.body.detail || "";
          errorBox.hidden = false;
          return;
        }
        var row = retryButton.closest("tr");
        row.querySelector(".job-state").textContent = answer.body.state;
        retryButton.replaceWith(document.createTextNode(messages.retried));
      });
    }
  });
})();
