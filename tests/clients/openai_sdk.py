"""Drives the service with the official OpenAI Python SDK and checks /metrics with
prometheus_client's parser. Run by ignored tests (`cargo test -- --include-ignored`): against
stub workers (tests/openai.rs) and against the real whisper-server (tests/real_whisper.rs).

argv: base URL, API key, audio file, expected transcript, a phrase the translation of the same
audio must contain ("" when the default model is English-only, which must refuse to
translate), the service's maxBodyBytes."""

import re
import sys
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families

base, key, audio_path, expected, translated, max_body = sys.argv[1:7]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


def words(text):
    return re.findall(r"[a-z0-9']+", text.lower())


def transcribe(response_format, **extra):
    with open(audio_path, "rb") as audio:
        return client.audio.transcriptions.create(model="whisper-1", file=audio, response_format=response_format, **extra)


def cue_text(subtitles):
    """The cues' text lines of an SRT or VTT file, joined."""
    lines = [l for l in subtitles.splitlines() if l and "-->" not in l and not l.isdigit() and l != "WEBVTT"]
    return " ".join(lines)


def fails(error, call):
    try:
        call()
    except error as e:
        return e
    raise AssertionError(f"expected {error.__name__}")


def metrics():
    request = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"})
    page = urllib.request.urlopen(request).read().decode()
    return {family.name: family for family in text_string_to_metric_families(page)}


def sample(families, family, name, **labels):
    for s in families[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


before = metrics()

# Every response format, as the SDK returns it, carries the same words.
assert transcribe("json").text == expected
assert transcribe("text").strip() == expected
srt = transcribe("srt")
assert srt.startswith("1\n00:00:00,000 --> ") and words(cue_text(srt)) == words(expected), srt
vtt = transcribe("vtt")
assert vtt.startswith("WEBVTT") and words(cue_text(vtt)) == words(expected), vtt
verbose = transcribe("verbose_json", timestamp_granularities=["word", "segment"])
assert verbose.text == expected and verbose.language == "english", verbose
assert words(" ".join(w.word for w in verbose.words)) == words(expected), verbose.words
assert all(w.start <= w.end for w in verbose.words), verbose.words
for segment in verbose.segments:
    for field in ["id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob"]:
        assert getattr(segment, field, None) is not None, (field, segment)
# A prompt may steer a real model's wording a little; most words stay.
steered = words(transcribe("json", language="en", temperature=0.0, prompt="An inaugural address.").text)
assert len(set(steered) & set(words(expected))) >= 0.8 * len(set(words(expected))), steered
with_logprobs = transcribe("json", include=["logprobs"])
assert with_logprobs.logprobs and all(p.logprob <= 0 for p in with_logprobs.logprobs), with_logprobs

# A stream: text deltas in order, then the whole text, read by the SDK unchanged.
with open(audio_path, "rb") as audio:
    events = list(client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True))
deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
done = [e for e in events if e.type == "transcript.text.done"]
assert len(done) == 1 and done[0].text == expected and deltas == expected, events

# Translation into English, in two formats; or, on an English-only model, a 400 saying why.
def translate(**extra):
    with open(audio_path, "rb") as audio:
        return client.audio.translations.create(model="whisper-1", file=audio, **extra)


if translated:
    assert translated.lower() in translate().text.lower()
    verbose = translate(response_format="verbose_json")
    assert verbose.language == "english" and verbose.segments, verbose
    assert getattr(verbose, "task", None) == "translate", verbose
else:
    e = fails(openai.BadRequestError, translate)
    assert "English-only" in e.message, e.message

# Models, listed and retrieved.
assert "whisper-1" in [m.id for m in client.models.list()]
assert client.models.retrieve("gpt-4o-transcribe").id == "gpt-4o-transcribe"

# Every error arrives as the SDK's own exception, with OpenAI's code and param.
e = fails(openai.NotFoundError, lambda: client.models.retrieve("no-such-model"))
assert e.code == "model_not_found", e.body
with open(audio_path, "rb") as audio:
    e = fails(openai.NotFoundError, lambda: client.audio.transcriptions.create(model="no-such-model", file=audio))
assert e.code == "model_not_found", e.body
wrong_key = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
with open(audio_path, "rb") as audio:
    e = fails(openai.AuthenticationError, lambda: wrong_key.audio.transcriptions.create(model="whisper-1", file=audio))
assert e.code == "invalid_api_key", e.body
e = fails(openai.BadRequestError, lambda: client.audio.transcriptions.create(model="whisper-1", file=("notes.txt", b"plain text, not audio")))
assert e.body["param"] == "file", e.body
e = fails(openai.BadRequestError, lambda: transcribe("text", timestamp_granularities=["word"]))
assert e.body["param"] == "timestamp_granularities[]", e.body
e = fails(openai.BadRequestError, lambda: transcribe("json", temperature=3))
assert e.body["param"] == "temperature", e.body
e = fails(openai.BadRequestError, lambda: transcribe("json", language="xx"))
assert e.body["param"] == "language", e.body
too_big = b"RIFF" + bytes(int(max_body) + 1)
e = fails(openai.APIStatusError, lambda: client.audio.transcriptions.create(model="whisper-1", file=("big.wav", too_big)))
assert e.status_code == 413 and "Maximum content size limit (" in e.message, (e.status_code, e.message)

# The metrics page parses, and its counters moved.
after = metrics()
route = "/v1/audio/transcriptions"
served = sample(after, "ism_http_requests", "ism_http_requests_total", route=route, status="200") - sample(
    before, "ism_http_requests", "ism_http_requests_total", route=route, status="200")
assert served == 8, served
translations = sample(after, "ism_http_requests", "ism_http_requests_total", route="/v1/audio/translations", status="200" if translated else "400")
assert translations >= (2 if translated else 1), translations
assert sample(after, "ism_http_requests", "ism_http_requests_total", route=route, status="404") >= 1
inferences = sum(s.value for s in after["ism_inference_duration_seconds"].samples if s.name.endswith("_count"))
assert inferences >= 9, inferences
assert sample(after, "ism_workers", "ism_workers", state="healthy") >= 1
for family in ["ism_worker_restarts", "ism_worker_rotations", "ism_inflight_requests", "ism_queue_depth"]:
    assert family in after, sorted(after)
print("openai sdk and prometheus parser: ok")
