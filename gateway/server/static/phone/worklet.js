// The softphone's audio thread: microphone → 16 kHz PCM16 frames, and 16 kHz PCM16 → the speakers.
// Loaded with audioWorklet.addModule("worklet.js"); registers two processors:
//
// * "pcm16-capture": resamples the microphone from the context's rate (48 kHz typically, whatever the
//   device gives) to 16 kHz with a band-limited (windowed-sinc) resampler, and posts 20 ms frames of
//   PCM16 little-endian (640 bytes) with the frame's level and its end time on the context's clock.
// * "pcm16-playback": a ring buffer of the bot's audio, resampled 16 kHz → the context's rate, with a
//   small adaptive jitter buffer (playback starts once 60 ms is queued, or the first sample has waited
//   that long; each gap adds 20 ms, up to 200 ms), so the gateway's short lead plays without gaps. It echoes marks once the audio before them has played,
//   drops everything on "clear" (barge-in) and reports when a reply's first sample is played, which the
//   page's reply-latency clock uses.
"use strict";

const WIRE_RATE = 16000;
const FRAME_SAMPLES = WIRE_RATE / 50; // 20 ms at 16 kHz
// Zero crossings of the sinc on each side of the kernel, and the table's points per input sample.
const ZEROS = 24;
const TABLE_STEPS = 256;

// Streaming band-limited resampling (windowed-sinc interpolation, Blackman window, the "bandlimited
// interpolation" method of J. O. Smith, ccrma.stanford.edu/~jos/resample/). The cut-off sits 8 % below
// the lower rate's Nyquist frequency: no aliasing going down, no images going up.
class Resampler {
  constructor(inRate, outRate) {
    this.inRate = inRate;
    this.outRate = outRate;
    const fc = 0.5 * Math.min(1, outRate / inRate) * 0.92; // cycles per input sample
    this.half = Math.ceil(ZEROS / (2 * fc)); // kernel half-width in input samples
    const size = this.half * TABLE_STEPS + 2;
    this.table = new Float32Array(size);
    for (let i = 0; i < size; i++) {
      const x = i / TABLE_STEPS;
      if (x >= this.half) break;
      const arg = 2 * Math.PI * fc * x;
      const sinc = x === 0 ? 1 : Math.sin(arg) / arg;
      const r = Math.PI * x / this.half;
      const window = 0.42 + 0.5 * Math.cos(r) + 0.08 * Math.cos(2 * r);
      this.table[i] = 2 * fc * sinc * window;
    }
    // Input history: buf[0] is input sample number `start`; `half` zeros of history to begin with.
    this.buf = new Float32Array(8192);
    this.len = this.half;
    this.start = -this.half;
    this.produced = 0; // output samples so far: the next one sits at produced * inRate / outRate
  }

  // Append `input` (Float32Array) and call emit(sample) for every output sample it completes.
  push(input, emit) {
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.len + input.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    const { buf, table, half, inRate, outRate } = this;
    const end = this.start + this.len; // one past the newest input sample
    for (;;) {
      const pos = this.produced * inRate / outRate; // exact in doubles for days of audio
      const center = Math.floor(pos);
      if (center + half >= end) break;
      let acc = 0;
      for (let k = center - half + 1; k <= center + half; k++) {
        const d = Math.abs(pos - k) * TABLE_STEPS;
        const i = d | 0;
        const h = table[i] + (table[i + 1] - table[i]) * (d - i);
        acc += buf[k - this.start] * h;
      }
      emit(acc);
      this.produced++;
    }
    // Keep only the history the next output sample needs.
    const keepFrom = Math.floor(this.produced * inRate / outRate) - half + 1;
    const drop = keepFrom - this.start;
    if (drop > 0) {
      this.buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.start = keepFrom;
    }
  }
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(sampleRate, WIRE_RATE);
    this.frame = new DataView(new ArrayBuffer(FRAME_SAMPLES * 2));
    this.count = 0;
    this.sumSquares = 0;
    this.peak = 0;
    this.mono = new Float32Array(128);
    this.running = true;
    this.muted = false;
    this.port.onmessage = (event) => {
      if (event.data === "stop") this.running = false;
      else if (event.data && typeof event.data.muted === "boolean") this.muted = event.data.muted;
    };
    this.emit = (sample) => {
      const s = this.muted ? 0 : Math.max(-1, Math.min(1, sample));
      this.frame.setInt16(this.count * 2, s < 0 ? Math.round(s * 32768) : Math.round(s * 32767), true);
      this.sumSquares += s * s;
      const a = Math.abs(s);
      if (a > this.peak) this.peak = a;
      if (++this.count === FRAME_SAMPLES) {
        const pcm = this.frame.buffer;
        this.port.postMessage(
          { pcm, rms: Math.sqrt(this.sumSquares / FRAME_SAMPLES), peak: this.peak, t: this.blockEnd },
          [pcm],
        );
        this.frame = new DataView(new ArrayBuffer(FRAME_SAMPLES * 2));
        this.count = 0;
        this.sumSquares = 0;
        this.peak = 0;
      }
    };
  }

  process(inputs, outputs) {
    const input = inputs[0];
    if (input && input.length) {
      const n = input[0].length;
      if (this.mono.length !== n) this.mono = new Float32Array(n);
      const mono = this.mono;
      mono.set(input[0]);
      for (let c = 1; c < input.length; c++) {
        const ch = input[c];
        for (let i = 0; i < n; i++) mono[i] += ch[i];
      }
      if (input.length > 1) for (let i = 0; i < n; i++) mono[i] /= input.length;
      this.blockEnd = currentTime + n / sampleRate;
      this.resampler.push(mono, this.emit);
    }
    for (const channel of outputs[0] || []) channel.fill(0);
    return this.running;
  }
}

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ring = new Float32Array(sampleRate * 30);
    this.written = 0; // samples ever written (at the context's rate)
    this.played = 0; // samples ever played
    this.marks = []; // [{name, at}] in written order
    this.playing = false;
    this.waitingSince = -1; // currentTime when audio arrived while not playing
    // The jitter buffer: 60 ms to start with; every gap (the buffer ran dry mid-reply and audio came
    // back within 250 ms) adds 20 ms, up to 200 ms, so a bursty link stops gapping at a small cost.
    this.jitter = Math.round(0.06 * sampleRate);
    this.maxJitter = Math.round(0.2 * sampleRate);
    this.dryAt = -1;
    this.gaps = 0;
    this.resampler = new Resampler(WIRE_RATE, sampleRate);
    this.levelSquares = 0;
    this.levelPeak = 0;
    this.levelCount = 0;
    this.levelEvery = Math.round(0.04 * sampleRate);
    this.overflows = 0;
    this.running = true;
    this.write = (sample) => {
      if (this.written - this.played >= this.ring.length) {
        this.overflows++;
        return;
      }
      this.ring[this.written % this.ring.length] = sample;
      this.written++;
    };
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(msg) {
    if (msg === "stop") {
      this.running = false;
    } else if (msg.pcm) {
      const view = new DataView(msg.pcm);
      const n = view.byteLength >> 1;
      const floats = new Float32Array(n);
      for (let i = 0; i < n; i++) floats[i] = view.getInt16(i * 2, true) / 32768;
      if (!this.playing && this.waitingSince < 0) this.waitingSince = currentTime;
      this.resampler.push(floats, this.write);
    } else if (typeof msg.mark === "string") {
      this.marks.push({ name: msg.mark, at: this.written });
      this.echoMarks();
    } else if (msg.clear) {
      const dropped = this.written - this.played;
      this.written = this.played;
      this.resampler = new Resampler(WIRE_RATE, sampleRate);
      const names = this.marks.map((m) => m.name);
      this.marks = [];
      this.playing = false;
      this.waitingSince = -1;
      this.dryAt = -1; // the next audio is a new reply, not a gap
      this.port.postMessage({ cleared: dropped / sampleRate, marks: names });
    }
  }

  echoMarks() {
    while (this.marks.length && this.marks[0].at <= this.played) {
      this.port.postMessage({ mark: this.marks.shift().name });
    }
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    let queued = this.written - this.played;
    if (!this.playing && queued > 0) {
      // The jitter buffer: a little ahead before the first sample, so a late message is no gap.
      if (queued >= this.jitter || currentTime - this.waitingSince >= this.jitter / sampleRate) {
        const gap = this.dryAt >= 0 && currentTime - this.dryAt < 0.25;
        if (gap) {
          this.gaps++;
          this.jitter = Math.min(this.maxJitter, this.jitter + Math.round(0.02 * sampleRate));
        }
        this.playing = true;
        this.waitingSince = -1;
        this.port.postMessage({ started: currentTime, queued: queued / sampleRate, gap, jitter: this.jitter / sampleRate });
      }
    }
    let i = 0;
    if (this.playing) {
      const ring = this.ring;
      const size = ring.length;
      const take = Math.min(n, queued);
      for (; i < take; i++) {
        const s = ring[(this.played + i) % size];
        out[i] = s;
        this.levelSquares += s * s;
        const a = Math.abs(s);
        if (a > this.levelPeak) this.levelPeak = a;
      }
      this.played += take;
      queued -= take;
      if (queued === 0) {
        this.playing = false; // ran dry: the end of a reply, or a gap if audio comes back at once
        this.dryAt = currentTime + take / sampleRate;
        this.port.postMessage({ dry: this.dryAt, played: this.played / sampleRate });
      }
    }
    for (; i < n; i++) out[i] = 0;
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.echoMarks();
    this.levelCount += n;
    if (this.levelCount >= this.levelEvery) {
      this.port.postMessage({
        level: Math.sqrt(this.levelSquares / this.levelCount),
        peak: this.levelPeak,
        played: this.played / sampleRate,
        queued: (this.written - this.played) / sampleRate,
      });
      this.levelSquares = 0;
      this.levelPeak = 0;
      this.levelCount = 0;
    }
    return this.running;
  }
}

registerProcessor("pcm16-capture", CaptureProcessor);
registerProcessor("pcm16-playback", PlaybackProcessor);
