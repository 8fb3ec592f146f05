// A Bun/Elysia service with the JSON route of the original: decode the base64, check it is
// audio, take an idle worker (or wait for one), post whisper-server's form, reshape the answer.
import { Elysia } from "elysia";

const port = Number(process.env.PORT);
const workers = process.env.WORKERS.split(",").map((p, i) => ({
  id: `worker-${i}`,
  url: `http://127.0.0.1:${p}`,
  busy: false,
}));
const waiting = [];

function acquire() {
  const idle = workers.find((w) => !w.busy);
  if (idle) {
    idle.busy = true;
    return Promise.resolve(idle);
  }
  return new Promise((resolve) => waiting.push(resolve));
}

function release(worker) {
  const next = waiting.shift();
  if (next) next(worker);
  else worker.busy = false;
}

function isAudio(b) {
  const ascii = (at, s) => b.toString("latin1", at, at + s.length) === s;
  return (
    (ascii(0, "RIFF") && ascii(8, "WAVE")) || ascii(0, "ID3") || ascii(0, "fLaC") ||
    ascii(0, "OggS") || (b[0] === 0xff && (b[1] & 0xe0) === 0xe0)
  );
}

function invalid(set, error) {
  set.status = 400;
  return { success: false, code: "INVALID_REQUEST", error };
}

new Elysia()
  .post("/api/v1/transcriptions", async ({ body, set }) => {
    const { content, language = "auto", timestamps = true, metadata = {} } = body ?? {};
    if (typeof content !== "string") return invalid(set, "content must be a base64 string");
    const audio = Buffer.from(content.replace(/^data:[^,]*,/, "").replace(/\s+/g, ""), "base64");
    if (audio.length < 12 || !isAudio(audio)) return invalid(set, "content is not audio");
    const worker = await acquire();
    try {
      const form = new FormData();
      form.append("file", new Blob([audio], { type: "audio/wav" }), "audio.wav");
      form.append("response_format", timestamps ? "verbose_json" : "json");
      form.append("language", language);
      const answer = await fetch(`${worker.url}/inference`, { method: "POST", body: form });
      if (!answer.ok) {
        set.status = 502;
        return { success: false, code: "WORKER_ERROR", error: `worker answered ${answer.status}` };
      }
      const data = await answer.json();
      const segments = timestamps
        ? (data.segments ?? []).map((s) => ({
            start: s.start, end: s.end, text: s.text.trim(), confidence: Math.exp(s.avg_logprob ?? 0), speaker: null,
          }))
        : [];
      return {
        success: true,
        message: "Transcription completed successfully",
        result: {
          text: (data.text ?? "").trim(),
          language: data.language ?? language,
          duration: data.duration ?? 0,
          confidence: 0,
          provider: "whisper-server",
          segments,
          metadata: { ...metadata, worker_id: worker.id, worker_url: worker.url },
        },
      };
    } finally {
      release(worker);
    }
  })
  .listen({ port, hostname: "127.0.0.1" });
