// Playback that starts while the response is still streaming.
//
// mp3 and aac go through MediaSource (an <audio> element fed chunk by chunk); pcm and wav
// (16-bit mono at 24 kHz) are scheduled on Web Audio as they arrive. Ogg opus goes
// through MediaSource where the browser takes it, else its pages are split here and
// decoded with WebCodecs onto Web Audio (Chromium's MediaSource refuses Ogg). What the
// browser cannot stream at all (flac; opus without WebCodecs, which needs a secure
// page) plays once complete.

export const SAMPLE_RATE = 24000;

const MEDIA_SOURCE_TYPES = { mp3: "audio/mpeg", aac: "audio/aac", opus: 'audio/ogg; codecs="opus"' };
export const MEDIA_TYPES = {
  mp3: "audio/mpeg",
  opus: "audio/ogg",
  aac: "audio/aac",
  flac: "audio/flac",
  wav: "audio/wav",
  pcm: "audio/pcm",
};

export function playbackMode(format) {
  if (format === "pcm" || format === "wav") return "webaudio";
  const type = MEDIA_SOURCE_TYPES[format];
  if (type && window.MediaSource && MediaSource.isTypeSupported(type)) return "mediasource";
  if (format === "opus" && window.AudioDecoder) return "webcodecs";
  return "buffered";
}

export const MODE_LABELS = {
  mediasource: "streaming (MediaSource)",
  webaudio: "streaming (Web Audio)",
  webcodecs: "streaming (WebCodecs + Web Audio)",
  buffered: "after download (this browser cannot stream the format)",
};

/** A PCM16 mono WAV file around `pcm`, so the <audio> element can replay what Web Audio played. */
export function wavFile(pcm, sampleRate = SAMPLE_RATE) {
  const header = new DataView(new ArrayBuffer(44));
  const ascii = (offset, text) => [...text].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  ascii(0, "RIFF");
  header.setUint32(4, 36 + pcm.byteLength, true);
  ascii(8, "WAVEfmt ");
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true);
  header.setUint16(22, 1, true);
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true);
  header.setUint16(32, 2, true);
  header.setUint16(34, 16, true);
  ascii(36, "data");
  header.setUint32(40, pcm.byteLength, true);
  return new Blob([header, ...pcm.parts], { type: "audio/wav" });
}

function waitFor(target, event) {
  return new Promise((resolve) => target.addEventListener(event, resolve, { once: true }));
}

function startPlaying(audio) {
  // A rejected play() (autoplay policy) leaves the controls for the user; nothing is lost.
  audio.play().catch(() => {});
}

class MediaSourceSink {
  constructor(audio, format) {
    this.audio = audio;
    this.type = MEDIA_SOURCE_TYPES[format];
    this.source = new MediaSource();
    this.objectUrl = URL.createObjectURL(this.source);
    this.opened = waitFor(this.source, "sourceopen");
    audio.src = this.objectUrl;
    this.chain = this.opened.then(() => {
      this.buffer = this.source.addSourceBuffer(this.type);
    });
    this.started = false;
  }

  push(bytes) {
    this.chain = this.chain.then(
      () =>
        new Promise((resolve, reject) => {
          const onEnd = () => {
            this.buffer.removeEventListener("error", onError);
            resolve();
          };
          const onError = () => {
            this.buffer.removeEventListener("updateend", onEnd);
            reject(new Error("The browser could not decode the audio stream."));
          };
          this.buffer.addEventListener("updateend", onEnd, { once: true });
          this.buffer.addEventListener("error", onError, { once: true });
          this.buffer.appendBuffer(bytes);
        }),
    );
    if (!this.started) {
      this.started = true;
      this.chain.then(() => startPlaying(this.audio)).catch(() => {});
    }
    return this.chain;
  }

  async finish() {
    await this.chain;
    if (this.source.readyState === "open") this.source.endOfStream();
    if (!Number.isFinite(this.audio.duration)) await waitFor(this.audio, "durationchange");
    return this.audio.duration;
  }

  stop() {
    this.audio.pause();
  }
}

class WebAudioSink {
  constructor(audio, format) {
    this.audio = audio;
    this.scheduler = new Scheduler(SAMPLE_RATE);
    this.carry = new Uint8Array(0);
    this.needHeader = format === "wav";
    this.parts = [];
    this.byteLength = 0;
  }

  push(bytes) {
    let data = this.carry.length ? concat(this.carry, bytes) : bytes;
    if (this.needHeader) {
      const start = wavDataOffset(data);
      if (start < 0) {
        this.carry = data;
        return Promise.resolve();
      }
      this.needHeader = false;
      data = data.subarray(start);
    }
    const usable = data.length - (data.length % 2);
    this.carry = data.slice(usable);
    if (usable) this.schedule(data.slice(0, usable));
    return Promise.resolve();
  }

  schedule(pcmBytes) {
    this.parts.push(pcmBytes);
    this.byteLength += pcmBytes.length;
    const samples = new Int16Array(pcmBytes.buffer, pcmBytes.byteOffset, pcmBytes.length / 2);
    const floats = new Float32Array(samples.length);
    for (let i = 0; i < samples.length; i += 1) floats[i] = samples[i] / 32768;
    this.scheduler.play(floats, SAMPLE_RATE);
  }

  async finish() {
    const seconds = this.byteLength / 2 / SAMPLE_RATE;
    const url = URL.createObjectURL(wavFile({ parts: this.parts, byteLength: this.byteLength }));
    this.audio.src = url;
    await waitFor(this.audio, "loadedmetadata");
    return seconds;
  }

  stop() {
    this.scheduler.stop();
  }
}

/** Plays Float32 blocks back to back on an AudioContext, starting as soon as one arrives. */
class Scheduler {
  constructor(sampleRate) {
    this.context = new AudioContext({ sampleRate });
    this.nextStart = 0;
  }

  play(samples, sampleRate) {
    if (!samples.length) return;
    const buffer = this.context.createBuffer(1, samples.length, sampleRate);
    buffer.copyToChannel(samples, 0);
    const node = this.context.createBufferSource();
    node.buffer = buffer;
    node.connect(this.context.destination);
    // A small lead keeps block boundaries gapless when a block arrives just in time.
    const at = Math.max(this.context.currentTime + 0.05, this.nextStart);
    node.start(at);
    this.nextStart = at + buffer.duration;
  }

  stop() {
    this.context.close().catch(() => {});
  }
}

/**
 * Ogg opus, streamed: Ogg pages are split into packets here (RFC 3533, RFC 7845) and
 * decoded with WebCodecs; the first channel is played (the server sends mono).
 */
class OggOpusSink {
  constructor(audio) {
    this.audio = audio;
    this.scheduler = new Scheduler(48000);
    this.pending = new Uint8Array(0);
    this.packet = [];
    this.packets = 0;
    this.decoder = null;
    this.preSkip = 0;
    this.parts = [];
    this.failure = null;
  }

  push(bytes) {
    if (this.failure) return Promise.reject(this.failure);
    this.parts.push(bytes);
    let data = this.pending.length ? concat(this.pending, bytes) : bytes;
    let at = 0;
    for (;;) {
      if (data.length - at < 27) break;
      if (data[at] !== 0x4f || data[at + 1] !== 0x67 || data[at + 2] !== 0x67 || data[at + 3] !== 0x53) {
        return Promise.reject(new Error("The server sent a malformed Ogg stream."));
      }
      const segments = data[at + 26];
      const header = 27 + segments;
      if (data.length - at < header) break;
      const lacing = data.subarray(at + 27, at + header);
      const size = lacing.reduce((sum, n) => sum + n, 0);
      if (data.length - at < header + size) break;
      let offset = at + header;
      for (const n of lacing) {
        this.packet.push(data.slice(offset, offset + n));
        offset += n;
        if (n < 255) this.onPacket();
      }
      at += header + size;
    }
    this.pending = data.slice(at);
    return Promise.resolve();
  }

  onPacket() {
    const packet = this.packet.length === 1 ? this.packet[0] : this.packet.reduce(concat);
    this.packet = [];
    this.packets += 1;
    if (this.packets === 1) {
      this.preSkip = packet[10] | (packet[11] << 8);
      this.decoder = new AudioDecoder({
        output: (data) => this.onAudio(data),
        error: (err) => {
          this.failure = err;
        },
      });
      this.decoder.configure({
        codec: "opus",
        sampleRate: 48000,
        numberOfChannels: packet[9],
        description: packet,
      });
      return;
    }
    if (this.packets === 2) return; // OpusTags
    // Timestamps only order the chunks here; the scheduler plays them back to back.
    const timestamp = (this.packets - 3) * 20000;
    this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp, data: packet }));
  }

  onAudio(data) {
    const samples = new Float32Array(data.numberOfFrames);
    data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
    const rate = data.sampleRate;
    data.close();
    let start = 0;
    if (this.preSkip) {
      start = Math.min(this.preSkip, samples.length);
      this.preSkip -= start;
    }
    this.scheduler.play(samples.subarray(start), rate);
  }

  async finish() {
    if (this.decoder) await this.decoder.flush();
    if (this.failure) throw this.failure;
    this.audio.src = URL.createObjectURL(new Blob(this.parts, { type: MEDIA_TYPES.opus }));
    await waitFor(this.audio, "loadedmetadata");
    return knownDuration(this.audio);
  }

  stop() {
    this.scheduler.stop();
    if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
  }
}

class BufferedSink {
  constructor(audio, format) {
    this.audio = audio;
    this.format = format;
    this.parts = [];
  }

  push(bytes) {
    this.parts.push(bytes);
    return Promise.resolve();
  }

  async finish() {
    const blob = new Blob(this.parts, { type: MEDIA_TYPES[this.format] });
    this.audio.src = URL.createObjectURL(blob);
    await waitFor(this.audio, "loadedmetadata");
    startPlaying(this.audio);
    return knownDuration(this.audio);
  }

  stop() {
    this.audio.pause();
  }
}

/** The element's duration; a streamed flac or ogg states none up front, so wait for it. */
async function knownDuration(audio) {
  if (!Number.isFinite(audio.duration)) {
    await Promise.race([
      waitFor(audio, "durationchange"),
      new Promise((resolve) => setTimeout(resolve, 3000)),
    ]);
  }
  return Number.isFinite(audio.duration) ? audio.duration : null;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Offset of the first sample in a WAV byte prefix, or -1 while the header is incomplete. */
function wavDataOffset(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (at) => String.fromCharCode(...bytes.subarray(at, at + 4));
  if (bytes.length < 12) return -1;
  if (tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("The server sent a malformed WAV stream.");
  let at = 12;
  while (at + 8 <= bytes.length) {
    if (tag(at) === "data") return at + 8;
    at += 8 + view.getUint32(at + 4, true) + (view.getUint32(at + 4, true) % 2);
  }
  return -1;
}

/**
 * Create the sink for `format` now (inside the click, so audio may start) and return it.
 * Call `play(response)` on the result to stream the body into it.
 */
export function createPlayback(audio, format) {
  const mode = playbackMode(format);
  const Sink = {
    mediasource: MediaSourceSink,
    webaudio: WebAudioSink,
    webcodecs: OggOpusSink,
    buffered: BufferedSink,
  }[mode];
  const sink = new Sink(audio, format);
  return {
    mode,
    stop: () => sink.stop(),
    /**
     * Resolves {blob, audioSeconds, lastByteAt} once the whole response is in the sink;
     * `onFirstAudio()` fires when the first audio bytes arrive. `lastByteAt` is a
     * performance.now() time: finishing (e.g. reading a duration) is not generation.
     */
    async play(response, onFirstAudio) {
      const reader = response.body.getReader();
      const parts = [];
      let first = true;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (!value.length) continue;
        if (first) {
          first = false;
          onFirstAudio();
        }
        parts.push(value);
        await sink.push(value);
      }
      const lastByteAt = performance.now();
      const audioSeconds = parts.length ? await sink.finish() : 0;
      return { blob: new Blob(parts, { type: MEDIA_TYPES[format] }), audioSeconds, lastByteAt };
    },
  };
}
