"""Drives the service with the official OpenAI Python SDK and checks /metrics with
prometheus_client's parser. Run by an ignored test in tests/openai.rs (`cargo test --
--include-ignored`) against a manager with stub workers: argv = base URL, API key, audio
file, expected transcript."""

import sys
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families

base, key, audio_path, expected = sys.argv[1:5]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


def transcribe(response_format, **extra):
    with open(audio_path, "rb") as audio:
        return client.audio.transcriptions.create(model="whisper-1", file=audio, response_format=response_format, **extra)


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

# Every response format, as the SDK returns it.
assert transcribe("json").text == expected
assert transcribe("text").strip() == expected
srt = transcribe("srt")
assert srt.startswith("1\n00:00:00,000 --> ") and expected in srt, srt
vtt = transcribe("vtt")
assert vtt.startswith("WEBVTT") and expected in vtt, vtt
verbose = transcribe("verbose_json", timestamp_granularities=["segment"])
assert verbose.text == expected and verbose.segments, verbose
assert transcribe("json", language="en", temperature=0.0, prompt="names: Stella").text == expected

# Errors arrive as the SDK's own exceptions.
try:
    with open(audio_path, "rb") as audio:
        client.audio.transcriptions.create(model="no-such-model", file=audio)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e.body
try:
    with open(audio_path, "rb") as audio:
        openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).audio.transcriptions.create(model="whisper-1", file=audio)
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.code == "invalid_api_key", e.body
try:
    client.audio.transcriptions.create(model="whisper-1", file=("notes.txt", b"plain text, not audio"))
    raise AssertionError("text was accepted as audio")
except openai.BadRequestError as e:
    assert e.body["param"] == "file", e.body

assert "whisper-1" in [m.id for m in client.models.list()]

# The metrics page parses, and its counters moved.
after = metrics()
route = "/v1/audio/transcriptions"
served = sample(after, "ism_http_requests", "ism_http_requests_total", route=route, status="200") - sample(
    before, "ism_http_requests", "ism_http_requests_total", route=route, status="200")
assert served == 6, served
assert sample(after, "ism_http_requests", "ism_http_requests_total", route=route, status="404") >= 1
assert sample(after, "ism_http_request_duration_seconds", "ism_http_request_duration_seconds_count", route=route) >= 9
assert sample(after, "ism_inference_duration_seconds", "ism_inference_duration_seconds_count", model="default") >= 6
assert sample(after, "ism_workers", "ism_workers", state="healthy") == 2
for family in ["ism_worker_restarts", "ism_worker_rotations", "ism_inflight_requests", "ism_queue_depth"]:
    assert family in after, sorted(after)
print("openai sdk and prometheus parser: ok")
