// Research exports page: start an export from the form, redraw the job table every few seconds. No library.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var messages = JSON.parse(document.getElementById("messages").textContent);
  var errorBox = document.getElementById("action-error");
  var form = document.getElementById("research-export");
  var table = document.querySelector("#research-jobs tbody");

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function link(td, href, text) {
    if (!href) { return; }
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
    td.appendChild(document.createTextNode(" "));
  }

  function draw(jobs) {
    table.textContent = "";
    jobs.forEach(function (job) {
      var row = document.createElement("tr");
      row.setAttribute("data-job", String(job.id));
      cell(row, String(job.id));
      cell(row, job.state).className = "state-" + job.state;
      cell(row, job.created_at || "");
      cell(row, JSON.stringify(job.query));
      cell(row, job.destination.folder + (job.destination.dicomweb ? " → " + job.destination.dicomweb : ""));
      var c = job.counts;
      cell(row, [c.studies, c.instances, c.sent, c.refused, c.not_sent].join(" / "));
      cell(row, String(job.errors.length)).title = job.errors.join("\n");
      var links = cell(row, "");
      link(links, job.manifest, "manifest");
      link(links, job.labels, "labels");
      table.appendChild(row);
    });
  }

  function refresh() {
    fetch("/api/research-exports?limit=50", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (jobs) { if (jobs) { draw(jobs); } })
      .catch(function () { /* the next round tries again */ });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var query = {};
    ["Modality", "StudyDate", "BodyPartExamined", "StudyDescription"].forEach(function (key) {
      var value = form.elements[key].value.trim();
      if (value) { query[key] = value; }
    });
    var options = Array.prototype.slice.call(form.querySelectorAll('input[name="option"]:checked')).map(function (box) { return box.value; });
    var destination = {};
    if (form.elements.folder.value.trim()) { destination.folder = form.elements.folder.value.trim(); }
    if (form.elements.dicomweb.value) { destination.dicomweb = form.elements.dicomweb.value; }
    fetch("/api/research-exports", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ query: query, options: options, destination: destination })
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; },
                                  function () { return { ok: false, body: { detail: response.statusText } }; });
    }).then(function (answer) {
      if (!answer.ok) {
        var detail = answer.body.detail;
        errorBox.textContent = Array.isArray(detail)
          ? detail.map(function (d) { return (d.loc || []).slice(1).join(".") + ": " + d.msg; }).join("; ")
          : String(detail || "");
        errorBox.hidden = false;
        return;
      }
      errorBox.textContent = messages.queued.replace("{id}", String(answer.body.id));
      errorBox.hidden = false;
      refresh();
    });
  });

  refresh();
  window.setInterval(refresh, 3000);
})();
