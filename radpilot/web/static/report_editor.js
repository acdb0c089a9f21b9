// The report editor: saves sections over /api/reports, accepts AI phrases, signs after confirmation,
// and dictates into the section holding the cursor, streaming to /api/dictation/stream (when that service is there),
// executing the voice commands the dictation service recognised (go to a section, insert a normal phrase
// or the template, accept the AI findings, undo the last dictated phrase, sign after confirmation).
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

  // Saves of one section run one after another, each comparing with what the last one stored: a blur's save
  // still in flight must neither land after a newer text nor make the newer text look already saved.
  const saving = new Map();
  function saveSection(area) {
    const text = area.value;
    const next = (saving.get(area.name) || Promise.resolve(true)).then(async () => {
      if (saved.get(area.name) === text) return true;
      try {
        await call("PUT", `/api/reports/${reportId}/sections/${area.name}`, { text });
        saved.set(area.name, text);
        say("Saved.");
        return true;
      } catch (e) { say(`Could not save ${area.name}: ${e.message}`); return false; }
    });
    saving.set(area.name, next);
    return next;
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

  // Accepting updates the page in place (no reload), so a dictation's later commands and its undo stack survive.
  // Returns how many phrases were accepted, or null when the server refused.
  async function accept(ids) {
    if (!(await saveAll())) return null;
    try {
      const report = await call("POST", `/api/reports/${reportId}/accept-ai`, ids ? { phrase_ids: ids } : {});
      const pending = new Set((report.ai_phrases || []).filter((p) => p.state === "pending").map((p) => p.id));
      let accepted = 0;
      document.querySelectorAll("li.ai-phrase").forEach((item) => {
        if (pending.has(item.dataset.phrase)) return;
        const list = item.closest("ul.ai-phrases");
        item.remove();
        accepted += 1;
        if (list && !list.querySelector("li")) list.remove();
      });
      const all = document.getElementById("accept-all-ai");
      if (all) all.disabled = pending.size === 0;
      say(accepted ? `Accepted ${accepted} AI phrase${accepted === 1 ? "" : "s"}.` : "No AI phrases were waiting to be accepted.");
      return accepted;
    } catch (e) { say("Could not accept: " + e.message); return null; }
  }
  button("accept-all-ai", () => accept(null));
  document.querySelectorAll("button.accept-ai").forEach((b) => b.addEventListener("click", () => accept([b.dataset.phrase])));

  // Signing always asks the radiologist first, whether the button or the spoken "sign report" started it.
  // Returns true once signed.
  async function signReport() {
    if (!(await saveAll())) return false;
    if (!window.confirm("Sign this report? It becomes final and read-only, and is sent to the PACS, the RIS and the EHR.")) {
      say("Not signed: the signature was not confirmed.");
      return false;
    }
    try {
      await call("POST", `/api/reports/${reportId}/sign`, { confirm: true });
      window.location.reload();
      return true;
    } catch (e) { say("Not signed: " + e.message); return false; }
  }
  button("sign", signReport);

  button("amend", async () => {
    const reason = window.prompt("Reason for the amendment:");
    if (!reason) return;
    try {
      await call("POST", `/api/reports/${reportId}/amend`, { reason });
      window.location.reload();
    } catch (e) { say("Could not amend: " + e.message); }
  });

  // Dictation: hold the button (or F2) to talk; the audio streams to /api/dictation/stream, partial text shows
  // while speaking, and on release the pieces (text and voice commands, in spoken order) are applied from the
  // cursor of the section last edited.
  function insertAtCursor(area, text) {
    if (!area || !text) return null;
    const start = area.selectionStart ?? area.value.length;
    const end = area.selectionEnd ?? start;
    const before = area.value.slice(0, start);
    const spacer = before && !/\s$/.test(before) ? " " : "";
    area.value = before + spacer + text + area.value.slice(end);
    const caret = start + spacer.length + text.length;
    area.setSelectionRange(caret, caret);
    area.focus();
    lastFocused = area;
    return { start, text: spacer + text };
  }

  const byName = new Map(areas.map((area) => [area.name, area]));
  const title = (area) => area.closest(".report-section").querySelector("h2").textContent.trim();
  // The dictation service names sections as radiologists say them; the editor's fields differ for two.
  const SECTION_FIELDS = { indication: "clinical_information", recommendation: "impression" };
  const templatesData = document.getElementById("exam-templates");
  const examTemplates = templatesData ? JSON.parse(templatesData.textContent) : {};
  const TEMPLATE_NAME_MIN_SIMILARITY = 0.55;
  // What dictation inserted, newest last, per section: "undo" takes back only dictated text, never typing.
  const dictated = new Map();

  function remember(area, inserted) {
    if (!inserted) return;
    if (!dictated.has(area.name)) dictated.set(area.name, []);
    const stack = dictated.get(area.name);
    stack.push(inserted);
    if (stack.length > 50) stack.shift();
  }

  function moveTo(area) {
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
    lastFocused = area;
  }

  function undo(area) {
    const stack = dictated.get(area.name) || [];
    const last = stack.pop();
    if (!last) return `Nothing dictated in ${title(area)} to undo.`;
    // Where it was inserted, unless typing since moved it; then its last occurrence.
    let at = area.value.substr(last.start, last.text.length) === last.text ? last.start : area.value.lastIndexOf(last.text);
    if (at < 0) return `Could not undo in ${title(area)}: "${last.text.trim()}" was edited since.`;
    area.value = area.value.slice(0, at) + area.value.slice(at + last.text.length);
    area.setSelectionRange(at, at);
    area.focus();
    return `Removed "${last.text.trim()}" from ${title(area)}.`;
  }

  // Similarity of two names as the Dice coefficient of their letter pairs (0..1): "cast ct" and "chest ct" 0.62.
  function pairSimilarity(a, b) {
    const pairs = (text) => Array.from({ length: Math.max(text.length - 1, 0) }, (_, i) => text.slice(i, i + 2));
    const left = pairs(a), right = pairs(b);
    if (!left.length || !right.length) return 0;
    const pool = [...right];
    let shared = 0;
    for (const pair of left) {
      const at = pool.indexOf(pair);
      if (at >= 0) { shared += 1; pool.splice(at, 1); }
    }
    return (2 * shared) / (left.length + right.length);
  }

  // The template a spoken name means: exact name or title first, else the closest one when it is close
  // ("insert template cast CT", as the recogniser may hear it), else the study's own exam's template.
  function templateNamed(argument) {
    const wanted = (argument || "").toLowerCase().replace(/[^a-z0-9]+/g, " ").trim();
    let best = [null, null], bestScore = TEMPLATE_NAME_MIN_SIMILARITY;
    for (const [name, template] of Object.entries(examTemplates)) {
      const names = [name.replace(/_/g, " "), template.title.toLowerCase().replace(/[^a-z0-9]+/g, " ").trim()];
      if (wanted && names.includes(wanted)) return [name, template];
      const score = wanted ? Math.max(...names.map((candidate) => pairSimilarity(wanted, candidate))) : 0;
      if (score > bestScore) { best = [name, template]; bestScore = score; }
    }
    if (best[1]) return best;
    const own = root.dataset.exam;
    return own && examTemplates[own] ? [own, examTemplates[own]] : [null, null];
  }

  // "Insert template": the template's text for the current section at the cursor, and its text for every
  // other section that is still empty. What the radiologist wrote is never replaced, and a section that
  // already holds the template's text does not get it twice.
  function insertTemplate(area, argument) {
    const [name, template] = templateNamed(argument);
    if (!template) return `No report template "${argument || ""}".`;
    const filled = [];
    for (const other of areas) {
      const text = (template.sections[other.name] || "").trim();
      if (!text || other.value.includes(text)) continue;
      if (other === area) {
        remember(other, insertAtCursor(other, text));
      } else if (!other.value.trim()) {
        other.value = text;
        remember(other, { start: 0, text });
      } else continue;
      filled.push(title(other));
    }
    area.focus();
    return filled.length ? `Inserted the ${template.title} template into ${filled.join(", ")}.` : `The ${name} template's text is already there.`;
  }

  // Apply a dictation's pieces in spoken order; returns what each command did (also shown in the status line).
  async function applyPieces(pieces, target) {
    const notes = [];
    if (readOnly) { say("The report is read-only; nothing dictated was applied."); return notes; }
    let current = target || lastFocused || areas[0];
    const touched = new Set();
    const saveTouched = async () => {
      for (const area of touched) { if (!(await saveSection(area))) return false; }
      touched.clear();
      return true;
    };
    for (const piece of pieces) {
      if (piece.type === "text") {
        remember(current, insertAtCursor(current, (piece.text || "").trim()));
        touched.add(current);
        continue;
      }
      const command = piece.command;
      if (command === "go_to_section") {
        const area = byName.get(SECTION_FIELDS[piece.argument] || piece.argument);
        if (area) { current = area; moveTo(area); notes.push(`Moved to ${title(area)}.`); }
        else notes.push(`No section "${piece.argument}" in this report.`);
      } else if (command === "insert_normal") {
        if (piece.text) {
          remember(current, insertAtCursor(current, piece.text));
          touched.add(current);
          notes.push(`Inserted the normal ${piece.argument || ""} phrase into ${title(current)}.`.replace("  ", " "));
        } else notes.push("No normal phrase is defined for this exam.");
      } else if (command === "insert_template") {
        notes.push(insertTemplate(current, piece.argument));
        areas.forEach((area) => touched.add(area));
      } else if (command === "undo") {
        notes.push(undo(current));
        touched.add(current);
      } else if (command === "accept_ai_findings") {
        await saveTouched();
        await accept(null);
        notes.push(message.textContent);
      } else if (command === "sign") {
        await saveTouched();
        say([...notes, "Confirm to sign the report."].join(" "));
        if (await signReport()) return notes;
        notes.push(message.textContent);
        current.focus();
      } else notes.push(`Unknown command "${command}".`);
    }
    await saveTouched();
    if (notes.length) { say(notes.join(" ")); window.radpilotReportEditor.log.push(...notes); }
    return notes;
  }

  const dictate = document.getElementById("dictate");
  const partialLine = document.getElementById("dictation-partial");
  let dictation = null;
  let held = false;
  let starting = false;

  // One streaming session per page (RadPilotDictation, dictation.js): partial text while the button is held,
  // the final result's pieces applied from the cursor of the section last edited once it is released.
  function dictationSession() {
    if (dictation || typeof RadPilotDictation === "undefined") return dictation;
    dictation = new RadPilotDictation({
      exam: root.dataset.dictationExam || "",
      onPartial: (text) => {
        if (partialLine) partialLine.textContent = text;
        window.radpilotReportEditor.partials.push(text);
      },
      onFinal: (result) => {
        if (partialLine) partialLine.textContent = "";
        say("Dictated.");
        applyDictation(result, lastFocused);
      },
      onError: (error) => { if (partialLine) partialLine.textContent = ""; say("Dictation failed: " + error); },
      onState: (state) => {
        if (state === "listening") say("Listening...");
        else if (state === "recognising") say("Recognising...");
      },
    });
    return dictation;
  }

  async function startDictation() {
    held = true;
    if (starting || (dictation && dictation.talking)) return;
    if (!navigator.mediaDevices) { say("This browser gives no microphone here."); return; }
    const session = dictationSession();
    if (!session) { say("Dictation is not available on this page."); return; }
    starting = true;
    try {
      await session.start();
      dictate.classList.add("recording");
    } catch (e) {
      say("No microphone or no dictation service: " + e.message);
    } finally {
      starting = false;
    }
    // The button may have been released while the microphone was opening.
    if (!held) stopDictation();
  }

  function stopDictation() {
    held = false;
    if (dictate) dictate.classList.remove("recording");
    if (!starting && dictation && dictation.talking) dictation.stop();
  }

  function applyDictation(data, target) {
    const pieces = Array.isArray(data.pieces) ? data.pieces : [{ type: "text", text: data.text || "" }];
    return applyPieces(pieces, target);
  }

  // A recorded clip through POST /api/dictation (scripted runs and tests; the microphone streams).
  async function sendDictation(blob) {
    const target = lastFocused;
    const exam = encodeURIComponent(root.dataset.dictationExam || "");
    try {
      const h = headers();
      h["Content-Type"] = blob.type || "audio/webm";
      const response = await fetch(`/api/dictation?exam=${exam}`, { method: "POST", headers: h, body: blob, credentials: "same-origin" });
      if (response.status === 404) { say("Dictation is not available on this RadPilot."); return; }
      const data = await response.json();
      if (!response.ok) { say("Dictation failed: " + (data.detail || response.statusText)); return; }
      say("Dictated.");
      await applyDictation(data, target);
    } catch (e) { say("Dictation failed: " + e.message); }
  }

  if (dictate) {
    // Capturing the pointer keeps a held button held even if the page moves under it.
    dictate.addEventListener("pointerdown", (event) => { if (dictate.setPointerCapture) dictate.setPointerCapture(event.pointerId); startDictation(); });
    dictate.addEventListener("pointerup", stopDictation);
    dictate.addEventListener("pointerleave", stopDictation);
    document.addEventListener("keydown", (event) => { if (event.key === "F2" && !event.repeat) { event.preventDefault(); startDictation(); } });
    document.addEventListener("keyup", (event) => { if (event.key === "F2") stopDictation(); });
  }
  // For tests and scripted runs: the same paths a spoken clip takes.
  window.radpilotReportEditor = {
    log: [],
    partials: [],
    insertAtCursor: (text) => { const inserted = insertAtCursor(lastFocused, text); if (lastFocused) saveSection(lastFocused); return inserted; },
    applyPieces: (pieces) => applyPieces(pieces, lastFocused),
    dictateClip: (blob) => sendDictation(blob),
  };
})();
