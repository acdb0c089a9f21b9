// The report editor: saves sections over /api/reports, accepts AI phrases, signs after confirmation,
// and dictates into the section holding the cursor through /api/dictation (when that service is there).
"use strict";

(function () {
  const root = document.getElementById("report-editor");
  if (!root) return;
  const reportId = root.dataset.report;
  const readOnly = root.dataset.readOnly === "true";
  const message = document.getElementById("message");
  const saved = new Map();
  let lastFocused = null;

  function say(text) { message.textContent = text; }

  function headers() {
    const h = { "Content-Type": "application/json" };
    const csrf = document.querySelector('meta[name="csrf-token"]');
    if (csrf) h["X-CSRF-Token"] = csrf.content;
    return h;
  }

  async function call(method, url, body) {
    const response = await fetch(url, { method, headers: headers(), body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const detail = data && data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : response.statusText;
      throw new Error(detail);
    }
    return data;
  }

  const createForm = document.getElementById("create-form");
  if (createForm) {
    createForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const template = document.getElementById("template-select").value || null;
      try {
        await call("POST", "/api/reports", { study_instance_uid: root.dataset.study, template });
        window.location.reload();
      } catch (e) { say("Could not start the report: " + e.message); }
    });
  }
  if (!reportId) return;

  const areas = Array.from(document.querySelectorAll(".report-section textarea"));
  areas.forEach((area) => {
    saved.set(area.name, area.value);
    area.addEventListener("focus", () => { lastFocused = area; });
    area.addEventListener("blur", () => { if (!readOnly) saveSection(area); });
  });
  if (areas.length && !readOnly) { lastFocused = areas.find((a) => a.name === "findings") || areas[0]; }

  async function saveSection(area) {
    if (saved.get(area.name) === area.value) return true;
    try {
      await call("PUT", `/api/reports/${reportId}/sections/${area.name}`, { text: area.value });
      saved.set(area.name, area.value);
      say("Saved.");
      return true;
    } catch (e) { say(`Could not save ${area.name}: ${e.message}`); return false; }
  }

  async function saveAll() {
    for (const area of areas) { if (!(await saveSection(area))) return false; }
    return true;
  }

  function button(id, handler) {
    const element = document.getElementById(id);
    if (element) element.addEventListener("click", handler);
  }

  button("save", saveAll);
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "s") { event.preventDefault(); if (!readOnly) saveAll(); }
  });

  async function accept(ids) {
    if (!(await saveAll())) return;
    try {
      await call("POST", `/api/reports/${reportId}/accept-ai`, ids ? { phrase_ids: ids } : {});
      window.location.reload();
    } catch (e) { say("Could not accept: " + e.message); }
  }
  button("accept-all-ai", () => accept(null));
  document.querySelectorAll("button.accept-ai").forEach((b) => b.addEventListener("click", () => accept([b.dataset.phrase])));

  button("sign", async () => {
    if (!(await saveAll())) return;
    if (!window.confirm("Sign this report? It becomes final and read-only, and is sent to the PACS, the RIS and the EHR.")) return;
    try {
      await call("POST", `/api/reports/${reportId}/sign`, { confirm: true });
      window.location.reload();
    } catch (e) { say("Not signed: " + e.message); }
  });

  button("amend", async () => {
    const reason = window.prompt("Reason for the amendment:");
    if (!reason) return;
    try {
      await call("POST", `/api/reports/${reportId}/amend`, { reason });
      window.location.reload();
    } catch (e) { say("Could not amend: " + e.message); }
  });

  // Dictation: hold the button (or F2) to record; on release the clip goes to /api/dictation and
  // its text is inserted at the cursor of the section last edited.
  function insertAtCursor(area, text) {
    if (!area || !text) return;
    const start = area.selectionStart ?? area.value.length;
    const end = area.selectionEnd ?? start;
    const before = area.value.slice(0, start);
    const spacer = before && !/\s$/.test(before) ? " " : "";
    area.value = before + spacer + text + area.value.slice(end);
    const caret = start + spacer.length + text.length;
    area.setSelectionRange(caret, caret);
    area.focus();
    saveSection(area);
  }

  const dictate = document.getElementById("dictate");
  let recorder = null;
  let chunks = [];

  let held = false;
  let starting = false;

  async function startDictation() {
    held = true;
    if (recorder || starting) return;
    if (!navigator.mediaDevices) { say("This browser gives no microphone here."); return; }
    starting = true;
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      chunks = [];
      const current = new MediaRecorder(stream);
      recorder = current;
      current.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
      current.onstop = () => { stream.getTracks().forEach((t) => t.stop()); recorder = null; sendDictation(new Blob(chunks, { type: current.mimeType })); };
      current.start();
      dictate.classList.add("recording");
      say("Listening...");
      // The button may have been released while the microphone was opening.
      if (!held) stopDictation();
    } catch (e) { say("No microphone: " + e.message); recorder = null; }
    finally { starting = false; }
  }

  function stopDictation() {
    held = false;
    if (recorder && recorder.state === "recording") recorder.stop();
    if (dictate) dictate.classList.remove("recording");
  }

  async function sendDictation(blob) {
    const target = lastFocused;
    const exam = encodeURIComponent(root.dataset.exam || "");
    try {
      const h = headers();
      h["Content-Type"] = blob.type || "audio/webm";
      const response = await fetch(`/api/dictation?exam=${exam}`, { method: "POST", headers: h, body: blob, credentials: "same-origin" });
      if (response.status === 404) { say("Dictation is not available on this RadPilot."); return; }
      const data = await response.json();
      if (!response.ok) { say("Dictation failed: " + (data.detail || response.statusText)); return; }
      insertAtCursor(target, (data.text || "").trim());
      say("Dictated.");
    } catch (e) { say("Dictation failed: " + e.message); }
  }

  if (dictate) {
    dictate.addEventListener("pointerdown", startDictation);
    dictate.addEventListener("pointerup", stopDictation);
    dictate.addEventListener("pointerleave", stopDictation);
    document.addEventListener("keydown", (event) => { if (event.key === "F2" && !event.repeat) { event.preventDefault(); startDictation(); } });
    document.addEventListener("keyup", (event) => { if (event.key === "F2") stopDictation(); });
  }
  window.radpilotReportEditor = { insertAtCursor: (text) => insertAtCursor(lastFocused, text) };
})();
