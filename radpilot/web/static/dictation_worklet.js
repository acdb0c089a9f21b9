// Microphone capture on the audio rendering thread. A ScriptProcessorNode ran on the page's main
// thread and dropped audio whenever that thread was busy (a loaded workstation, the viewer
// rendering), which garbled dictation; here every 128-frame block is posted in order and waits in
// the port's queue until the page takes it. "flush" is answered after every block posted before it.
class RadPilotPcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.port.onmessage = (event) => { if (event.data === "flush") this.port.postMessage("flushed"); };
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true;
  }
}

registerProcessor("radpilot-pcm-capture", RadPilotPcmCapture);
