// Push-to-talk dictation for RadPilot's report editor: microphone -> 16 kHz PCM16 -> WS /api/dictation/stream.
// RadPilotDictation streams while the talk button is held, shows partial text, and on release hands the
// final result's pieces (report text and voice commands, in spoken order) to the editor's callbacks.
"use strict";

class RadPilotDictation {
  constructor({ exam = "", language = "en", onPartial = () => {}, onFinal = () => {}, onError = () => {}, onState = () => {} } = {}) {
    Object.assign(this, { exam, language, onPartial, onFinal, onError, onState });
    this.socket = null;
    this.stream = null;
    this.context = null;
    this.talking = false;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ language: this.language });
    if (this.exam) query.set("exam", this.exam);
    return `${scheme}//${location.host}/api/dictation/stream?${query}`;
  }

  connect() {
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) return this.ready;
    this.socket = new WebSocket(this.url());
    this.socket.binaryType = "arraybuffer";
    this.ready = new Promise((resolve, reject) => {
      this.socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.type === "ready") { this.onState("ready"); resolve(); }
        else if (message.type === "partial") this.onPartial(message.text);
        else if (message.type === "final") { this.onState("idle"); this.onFinal(message); }
        else if (message.type === "error") { this.onState("idle"); this.onError(message.error); reject(new Error(message.error)); }
      };
      this.socket.onclose = () => { this.onState("closed"); this.socket = null; };
      this.socket.onerror = () => reject(new Error("the dictation connection failed"));
    });
    this.ready.catch(() => {});
    return this.ready;
  }

  async start() {
    if (this.talking) return;
    this.talking = true;
    try {
      await this.open();
    } catch (error) {
      // No microphone, no model or no connection: leave nothing open, so the next press starts afresh.
      this.talking = false;
      this.sending = false;
      if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
      if (this.context) this.context.close().catch(() => {});
      this.stream = this.context = this.capture = null;
      this.onState("idle");
      throw error;
    }
  }

  async open() {
    this.onState("connecting");
    await this.connect();
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule("/ui/static/dictation_worklet.js");
    const source = this.context.createMediaStreamSource(this.stream);
    const capture = new AudioWorkletNode(this.context, "radpilot-pcm-capture", { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1 });
    const ratio = this.context.sampleRate / 16000;
    let pending = new Float32Array(0); // input samples not yet turned into whole 16 kHz samples
    this.capture = capture;
    this.sending = true;
    capture.port.onmessage = (event) => {
      if (event.data === "flushed") { if (this.flushed) this.flushed(); return; }
      if (!this.sending || !this.socket || this.socket.readyState !== WebSocket.OPEN) return;
      const input = new Float32Array(pending.length + event.data.length);
      input.set(pending);
      input.set(event.data, pending.length);
      const count = Math.floor(input.length / ratio);
      const out = new Int16Array(count);
      for (let i = 0; i < count; i++) {
        // Average the input samples that fall into each 16 kHz sample (a box filter against aliasing).
        const from = Math.floor(i * ratio), to = Math.min(input.length, Math.floor((i + 1) * ratio));
        let sum = 0;
        for (let j = from; j < to; j++) sum += input[j];
        const value = Math.max(-1, Math.min(1, sum / Math.max(1, to - from)));
        out[i] = value < 0 ? value * 0x8000 : value * 0x7fff;
      }
      pending = input.slice(Math.floor(count * ratio));
      if (count) this.socket.send(out.buffer);
    };
    // A silent path to the output keeps the graph pulling the capture node.
    const mute = this.context.createGain();
    mute.gain.value = 0;
    source.connect(capture);
    capture.connect(mute);
    mute.connect(this.context.destination);
    this.onState("listening");
  }

  async stop() {
    if (!this.talking) return;
    this.talking = false;
    if (this.capture) {
      // Every block captured before the release is sent before "end" (or after at most half a second).
      const capture = this.capture;
      await new Promise((resolve) => {
        this.flushed = resolve;
        capture.port.postMessage("flush");
        setTimeout(resolve, 500);
      });
      this.flushed = null;
      this.capture = null;
    }
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    if (this.context) await this.context.close();
    this.stream = this.context = null;
    this.sending = false; // nothing may follow "end"
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "end" }));
      this.onState("recognising");
    }
  }
}

// The dictation pad (/ui/dictation): report sections as text areas, executing the commands it can.
function setUpDictationPad() {
  const pad = document.querySelector("[data-dictation-pad]");
  if (!pad) return;
  const sections = new Map([...pad.querySelectorAll("textarea[data-section]")].map((area) => [area.dataset.section, area]));
  const partial = pad.querySelector("[data-partial]");
  const status = document.querySelector("[data-status]");
  const log = pad.querySelector("[data-commands]");
  const talk = pad.querySelector("[data-talk]");
  const exam = pad.querySelector("[data-exam]");
  const inserted = []; // [area, text] of each phrase, for "undo"
  let active = sections.get("findings");
  window.radpilotDictationLog = { partials: [], finals: [], errors: [] };

  const activate = (area) => {
    sections.forEach((other) => other.closest("label").classList.toggle("active", other === area));
    active = area;
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  };
  sections.forEach((area) => area.addEventListener("focus", () => { if (area !== active) activate(area); }));
  const insert = (text) => {
    const separator = active.value && !/\s$/.test(active.value) ? " " : "";
    active.value += separator + text;
    inserted.push([active, separator + text]);
    activate(active);
  };
  const note = (text) => { const item = document.createElement("li"); item.textContent = text; log.append(item); };

  const dictation = new RadPilotDictation({
    exam: exam.value,
    onPartial: (text) => { partial.textContent = text; window.radpilotDictationLog.partials.push(text); },
    onError: (error) => { status.textContent = error; window.radpilotDictationLog.errors.push(error); },
    onState: (state) => { status.textContent = state; pad.dataset.state = state; },
    onFinal: (result) => {
      partial.textContent = "";
      window.radpilotDictationLog.finals.push(result);
      for (const piece of result.pieces) {
        if (piece.type === "text") { insert(piece.text); continue; }
        note(`${piece.command}${piece.argument ? " " + piece.argument : ""}`);
        if (piece.command === "go_to_section" && sections.has(piece.argument)) activate(sections.get(piece.argument));
        else if (piece.command === "insert_normal" && piece.text) insert(piece.text);
        else if (piece.command === "undo" && inserted.length) {
          const [area, text] = inserted.pop();
          if (area.value.endsWith(text)) area.value = area.value.slice(0, area.value.length - text.length);
        } else document.dispatchEvent(new CustomEvent("radpilot-dictation-command", { detail: piece }));
      }
    },
  });
  exam.addEventListener("change", () => { dictation.exam = exam.value; if (dictation.socket) dictation.socket.close(); });
  const down = (event) => { event.preventDefault(); dictation.start().catch((error) => { status.textContent = String(error); }); };
  const up = (event) => { event.preventDefault(); dictation.stop(); };
  talk.addEventListener("pointerdown", down);
  talk.addEventListener("pointerup", up);
  talk.addEventListener("pointerleave", (event) => { if (dictation.talking) up(event); });
  activate(active);
}

document.addEventListener("DOMContentLoaded", setUpDictationPad);
