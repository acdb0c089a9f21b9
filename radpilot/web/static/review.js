// Findings review panel: sends accept / edit / reject decisions and the review's completion to /api.
// Text from the server is only ever set with textContent, so a reason holding markup stays text.
"use strict";

(function () {
  const root = document.getElementById("review");
  if (!root) return;
  const studyUid = root.dataset.studyUid;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const errorBox = document.getElementById("review-error");
  const statusBox = document.getElementById("review-status");
  const findings = () => Array.from(document.querySelectorAll(".finding"));

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || response.statusText);
      throw new Error(detail);
    }
    return data;
  }

  function render(item, shown) {
    const d = shown.decision;
    const label = item.querySelector(".decision");
    label.dataset.state = d ? d.decision : "undecided";
    label.textContent = d ? `${d.decision} by ${d.decided_by}${d.reason ? ": " + d.reason : ""}` : "undecided";
    item.querySelectorAll("details").forEach((el) => { el.open = false; });
  }

  async function decide(item, body) {
    showError("");
    const id = encodeURIComponent(item.dataset.findingId);
    try {
      render(item, await post(`/api/studies/${encodeURIComponent(studyUid)}/findings/${id}/decision`, body));
    } catch (err) {
      showError(err.message);
    }
  }

  function accept(item) { return decide(item, { decision: "accept" }); }

  function saveEdit(item) {
    const reason = item.querySelector(".edit-reason").value;
    const valueInput = item.querySelector(".edit-value");
    if (valueInput) {
      const value = valueInput.value === "" ? null : Number(valueInput.value);
      return decide(item, { decision: "edit", reason, value });
    }
    return decide(item, { decision: "edit", reason, category: item.querySelector(".edit-category").value });
  }

  function saveReject(item) {
    const typed = item.querySelector(".reject-text").value.trim();
    const chosen = item.querySelector(".reject-choice").value;
    return decide(item, { decision: "reject", reason: typed || chosen });
  }

  function openDetails(item, cls) {
    const details = item.querySelector(`details.${cls}`);
    if (!details) return;
    details.open = true;
    const first = details.querySelector("input, select");
    if (first) first.focus();
  }

  function select(item) {
    findings().forEach((el) => el.classList.toggle("current", el === item));
    item.focus();
  }

  root.addEventListener("click", (event) => {
    const item = event.target.closest(".finding");
    if (!item) return;
    if (event.target.matches("button.accept")) accept(item);
    else if (event.target.matches("button.save-edit")) saveEdit(item);
    else if (event.target.matches("button.save-reject")) saveReject(item);
    else select(item);
  });

  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const all = findings();
    if (!all.length) return;
    let current = document.querySelector(".finding.current") || all[0];
    const index = all.indexOf(current);
    if (event.key === "j" || event.key === "n") current = all[Math.min(index + 1, all.length - 1)];
    else if (event.key === "k" || event.key === "p") current = all[Math.max(index - 1, 0)];
    else if (event.key === "a") { accept(current); current = all[Math.min(index + 1, all.length - 1)]; }
    else if (event.key === "e") { openDetails(current, "edit"); event.preventDefault(); return; }
    else if (event.key === "r") { openDetails(current, "reject"); event.preventDefault(); return; }
    else return;
    event.preventDefault();
    select(current);
  });

  const complete = document.getElementById("complete-review");
  if (complete) {
    complete.addEventListener("click", async () => {
      showError("");
      try {
        const data = await post(`/api/studies/${encodeURIComponent(studyUid)}/review/complete`);
        const sent = data.completed.map((c) => c.verified_sr_uid ? `${c.analysis}: verified SR ${c.verified_sr_uid} sent to ${c.destinations.join(", ") || "no destination"}` : `${c.analysis}: ${c.note}`);
        statusBox.textContent = `Review finished. ${sent.join("; ")}`;
      } catch (err) {
        showError(err.message);
      }
    });
  }
})();
