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

  function showSecret(text) {
    var box = document.getElementById("secret");
    box.textContent = text;
    box.hidden = false;
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.getAttribute("data-kind")) { return; }
    event.preventDefault();
    var query = "?name=" + encodeURIComponent(form.elements.name.value) + "&role=" + encodeURIComponent(form.elements.role.value);
    post("/api/admin/" + form.getAttribute("data-kind") + query).then(function (answer) {
      if (!answer.ok) { errorBox.textContent = answer.body.detail || ""; errorBox.hidden = false; return; }
      var body = answer.body;
      showSecret(body.one_time_password ? messages.password.replace("{name}", body.name).replace("{secret}", body.one_time_password)
                                        : messages.token.replace("{name}", body.name).replace("{secret}", body.token));
    });
  });

  document.addEventListener("click", function (event) {
    var account = event.target.closest("button[data-disable], button[data-revoke]");
    if (account) {
      var disable = account.hasAttribute("data-disable");
      var name = account.getAttribute(disable ? "data-disable" : "data-revoke");
      post("/api/admin/" + (disable ? "users/" : "tokens/") + encodeURIComponent(name) + (disable ? "/disable" : "/revoke")).then(function (answer) {
        if (!answer.ok) { errorBox.textContent = answer.body.detail || ""; errorBox.hidden = false; return; }
        window.location.reload();
      });
      return;
    }
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
