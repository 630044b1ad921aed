// framestream live viewer: plain JS, no build step, no external code.
// Protocol: see framestream/serve/protocol.py. Figures are also kept on window.fsStats
// (frame paints, latencies) so tests and benchmarks can read what the page measured.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const STRIP_ROWS = 16; // frame-id strip below WebRTC frames (framestream/serve/frames.py)
  const STRIP_BITS = 16;
  const params = new URLSearchParams(location.search);
  const token = params.get("token");

  const stats = {
    state: "connecting", transport: null, painted: 0, ttffMs: null, firstFrameLatencies: [],
    allLatencies: [], serverDropped: 0, pageSkipped: 0, position: null, blocks: 0, framesGenerated: 0,
    errors: [], clockOffsetMs: 0, steers: [], sessionPainted: 0,
  };
  window.fsStats = stats;

  let ws = null;
  let welcome = null;
  let startRequestedAt = 0;
  let streamStartedAt = 0;
  let peer = null;
  let fallbackTimer = null;
  let wantedTransport = "auto";
  let endedExpected = 0; // "ended" replies to our own fallback stop, not the user's
  const blockDone = new Map(); // frame id -> {doneAt (server ms), first}
  const paintTimes = [];
  let pendingFrame = null;
  let frameSize = null; // generated frame size, from the server's block messages
  let rafPending = false;

  const wallNow = () => performance.timeOrigin + performance.now();
  const serverNow = (local) => local + stats.clockOffsetMs;
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const video = $("video");
  const stripCanvas = document.createElement("canvas");
  const stripCtx = stripCanvas.getContext("2d", { willReadFrequently: true });

  function setStatus(text) { $("status").textContent = text; }
  function send(message) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message)); }
  function percentile(values, q) {
    if (!values.length) return null;
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  }

  // ------------------------------------------------------------------ figures
  function refreshFigures() {
    $("f-ttff").textContent = stats.ttffMs === null ? "–" : `${stats.ttffMs.toFixed(0)} ms`;
    const now = performance.now();
    while (paintTimes.length && now - paintTimes[0] > 2000) paintTimes.shift();
    $("f-playfps").textContent = stats.state === "streaming" ? (paintTimes.length / 2).toFixed(1) : "–";
    const elapsed = (now - streamStartedAt) / 1000;
    $("f-genfps").textContent = stats.framesGenerated && elapsed > 0 ? (stats.framesGenerated / elapsed).toFixed(1) : "–";
    $("f-dropped").textContent = `${stats.serverDropped + stats.pageSkipped}`;
    $("f-position").textContent = stats.position === null ? "–" : `${stats.position}`;
    const p50 = percentile(stats.firstFrameLatencies, 0.5);
    $("f-latency").textContent = p50 === null ? "–" : `${p50.toFixed(0)} ms`;
    $("f-transport").textContent = stats.transport || "–";
    $("f-painted").textContent = `${stats.painted}`;
  }
  setInterval(refreshFigures, 250);

  function recordPaint(frameId, paintedLocalMs) {
    stats.painted += 1;
    stats.sessionPainted += 1;
    paintTimes.push(performance.now());
    if (stats.ttffMs === null) stats.ttffMs = paintedLocalMs - startRequestedAt;
    const info = blockDone.get(frameId);
    if (info) {
      const latency = serverNow(paintedLocalMs) - info.doneAt;
      stats.allLatencies.push(latency);
      if (info.first) stats.firstFrameLatencies.push(latency);
      blockDone.delete(frameId);
    }
    if (fallbackTimer) { clearTimeout(fallbackTimer); fallbackTimer = null; }
  }

  // ------------------------------------------------------------------ WebSocket transport (JPEG)
  async function onBinaryFrame(buffer) {
    const view = new DataView(buffer);
    const frameId = view.getUint32(0, true);
    const first = (view.getUint32(8, true) & 1) === 1;
    const doneAt = view.getFloat64(12, true);
    blockDone.set(frameId, { doneAt, first });
    const bitmap = await createImageBitmap(new Blob([new Uint8Array(buffer, 20)], { type: "image/jpeg" }));
    if (pendingFrame) { stats.pageSkipped += 1; blockDone.delete(pendingFrame.frameId); pendingFrame.bitmap.close(); }
    pendingFrame = { frameId, bitmap };
    if (!rafPending) {
      rafPending = true;
      requestAnimationFrame(() => {
        rafPending = false;
        const frame = pendingFrame;
        pendingFrame = null;
        if (!frame) return;
        if (canvas.width !== frame.bitmap.width || canvas.height !== frame.bitmap.height) {
          canvas.width = frame.bitmap.width; canvas.height = frame.bitmap.height;
        }
        ctx.drawImage(frame.bitmap, 0, 0);
        frame.bitmap.close();
        recordPaint(frame.frameId, wallNow());
      });
    }
  }

  // ------------------------------------------------------------------ WebRTC transport
  function readFrameId(width, height) {
    stripCanvas.width = width; stripCanvas.height = STRIP_ROWS;
    stripCtx.drawImage(video, 0, height - STRIP_ROWS, width, STRIP_ROWS, 0, 0, width, STRIP_ROWS);
    const row = stripCtx.getImageData(0, STRIP_ROWS / 2, width, 1).data;
    const cell = Math.floor(width / STRIP_BITS);
    let value = 0;
    for (let i = 0; i < STRIP_BITS; i++) {
      const x = i * cell + Math.floor(cell / 2);
      const level = (row[4 * x] + row[4 * x + 1] + row[4 * x + 2]) / 3;
      value = value * 2 + (level > 127 ? 1 : 0);
    }
    return value;
  }

  function onVideoFrame(now, metadata) {
    if (stats.transport !== "webrtc") return;
    const width = metadata.width || video.videoWidth;
    const height = metadata.height || video.videoHeight;
    if (width && height > STRIP_ROWS) {
      // Show only the generated picture: crop the id strip and the codec padding (right / bottom).
      const box = $("videobox");
      const shownWidth = frameSize ? frameSize.width : width;
      const shownHeight = frameSize ? frameSize.height : height - STRIP_ROWS;
      box.style.aspectRatio = `${shownWidth} / ${shownHeight}`;
      video.style.width = `${(100 * width) / shownWidth}%`;
      const low16 = readFrameId(width, height);
      // The strip carries the id modulo 2^16; pick the pending id that matches.
      let frameId = low16;
      for (const id of blockDone.keys()) { if ((id & 0xffff) === low16) { frameId = id; break; } }
      recordPaint(frameId, performance.timeOrigin + now);
    }
    video.requestVideoFrameCallback(onVideoFrame);
  }

  async function startWebRTC() {
    peer = new RTCPeerConnection();
    peer.addTransceiver("video", { direction: "recvonly" });
    peer.ontrack = (event) => {
      video.srcObject = event.streams[0] || new MediaStream([event.track]);
      video.play().catch(() => {});
      video.requestVideoFrameCallback(onVideoFrame);
    };
    peer.onconnectionstatechange = () => {
      if (peer && peer.connectionState === "failed") fallBack("WebRTC connection failed");
    };
    await peer.setLocalDescription(await peer.createOffer());
    // aiortc takes no trickled candidates: wait for gathering to finish, then send the whole offer.
    await new Promise((resolve) => {
      if (peer.iceGatheringState === "complete") return resolve();
      const timer = setTimeout(resolve, 3000);
      peer.addEventListener("icegatheringstatechange", () => {
        if (peer && peer.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
    send({ type: "offer", sdp: peer.localDescription.sdp });
  }

  function closePeer() {
    if (peer) { peer.close(); peer = null; }
    video.srcObject = null;
  }

  function fallBack(reason) {
    if (stats.transport !== "webrtc" || wantedTransport !== "auto") return;
    stats.errors.push(`fallback: ${reason}`);
    closePeer();
    endedExpected += 1;
    send({ type: "stop" });
    beginStream("websocket");
  }

  // ------------------------------------------------------------------ session control
  function showTransport(transport) {
    $("videobox").hidden = transport !== "webrtc";
    canvas.hidden = transport === "webrtc";
  }

  function beginStream(transport) {
    stats.transport = transport;
    stats.state = "requested";
    stats.sessionPainted = 0;
    blockDone.clear();
    showTransport(transport);
    send({ type: "start", prompt: $("prompt").value, seed: Number($("seed").value) || 0, transport });
  }

  function start() {
    if (!welcome) return;
    wantedTransport = $("transport").value;
    let transport = wantedTransport;
    const webrtcOk = welcome.transports.includes("webrtc") && "RTCPeerConnection" in window
      && "requestVideoFrameCallback" in HTMLVideoElement.prototype;
    if (transport === "auto") transport = webrtcOk ? "webrtc" : "websocket";
    startRequestedAt = wallNow();
    stats.ttffMs = null;
    stats.firstFrameLatencies = [];
    stats.allLatencies = [];
    beginStream(transport);
    $("start").disabled = true; $("stop").disabled = false; $("steer").disabled = false;
    setStatus("starting…");
  }

  function stop() {
    send({ type: "stop" });
    closePeer();
    if (fallbackTimer) { clearTimeout(fallbackTimer); fallbackTimer = null; }
  }

  function steer() {
    stats.steers.push({ at: wallNow(), prompt: $("prompt").value, paintedBefore: stats.painted });
    send({ type: "prompt", prompt: $("prompt").value });
  }

  function onStreamEnded(reason) {
    stats.state = "ended";
    stats.position = null;
    closePeer();
    $("start").disabled = false; $("stop").disabled = true; $("steer").disabled = true;
    setStatus(`stopped (${reason})`);
  }

  function onMessage(message) {
    switch (message.type) {
      case "welcome":
        welcome = message;
        $("prompt").maxLength = message.max_prompt_chars;
        if (message.random_weights) {
          const notice = $("notice");
          notice.textContent = `${message.recipe}: RANDOM weights — a pipeline smoke test; expect structured noise, not content.`;
          notice.hidden = false;
        }
        stats.state = "ready";
        setStatus(`ready (${message.recipe}; transports: ${message.transports.join(", ")})`);
        syncClock();
        break;
      case "pong": {
        const now = wallNow();
        const rtt = now - message.t;
        clockSamples.push({ rtt, offset: message.server_ms - (message.t + now) / 2 });
        clockSamples.sort((a, b) => a.rtt - b.rtt);
        stats.clockOffsetMs = clockSamples[0].offset; // the fastest round trip bounds the error best
        break;
      }
      case "queued":
        stats.state = "queued";
        stats.position = message.position;
        setStatus(message.message);
        break;
      case "started":
        stats.state = "streaming";
        stats.position = null;
        streamStartedAt = performance.now();
        stats.framesGenerated = 0;
        setStatus(`streaming over ${stats.transport}`);
        if (stats.transport === "webrtc") {
          startWebRTC().catch((err) => fallBack(String(err)));
          fallbackTimer = setTimeout(() => fallBack("no frame within 8 s"), 8000);
        }
        break;
      case "answer":
        if (peer) peer.setRemoteDescription({ type: "answer", sdp: message.sdp }).catch((err) => fallBack(String(err)));
        break;
      case "block":
        stats.blocks += 1;
        stats.framesGenerated += message.frames;
        stats.serverDropped = message.dropped;
        frameSize = { width: message.width, height: message.height };
        for (let i = 0; i < message.frames; i++) {
          const id = message.first_frame + i;
          if (!blockDone.has(id)) blockDone.set(id, { doneAt: message.done_at_ms, first: i === 0 });
        }
        break;
      case "prompt_ok":
        setStatus(`prompt changed; takes effect from block ${message.from_block + 1}`);
        break;
      case "ended":
        if (endedExpected > 0 && message.reason === "stopped") { endedExpected -= 1; break; }
        onStreamEnded(message.reason);
        break;
      case "error":
        stats.errors.push(`${message.code}: ${message.message}`);
        setStatus(`error: ${message.message}`);
        break;
      default:
        break;
    }
  }

  const clockSamples = [];
  function syncClock() {
    for (let i = 0; i < 5; i++) setTimeout(() => send({ type: "ping", t: wallNow() }), 50 * i);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = token ? `?token=${encodeURIComponent(token)}` : "";
    ws = new WebSocket(`${scheme}://${location.host}/ws${query}`);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => {
      if (typeof event.data === "string") onMessage(JSON.parse(event.data));
      else onBinaryFrame(event.data);
    };
    ws.onclose = () => { stats.state = "disconnected"; setStatus("disconnected (reload to reconnect)"); closePeer(); };
  }

  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  $("steer").addEventListener("click", steer);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      if (stats.state === "streaming") steer(); else if (!$("start").disabled) start();
    }
  });
  connect();
})();
