"""Drives the page at `GET /` in Debian's Chromium, as a person would (tests/page.rs runs it).

Against a manager with real workers (--url): records jfk.wav from Chromium's fake microphone and
checks the words; uploads a 42-second file and checks that its segments stream in, with times,
and download as SRT, VTT and text, and copy; shows a service error as worded; takes a dropped file; loads and unloads a model with the buttons; SIGKILLs a worker
and watches the pool view show its replacement; uses the tabs from the keyboard. Against a
manager with an API key (--keyed-url): the page asks for the key once, says when it is refused,
keeps it in session storage and never puts it in a URL. Saves screenshots of both views at
desktop and phone widths. Exits non-zero, saying what went wrong, on the first failed check.
"""

import argparse
import base64
import json
import os
import re
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
import wave

from playwright.sync_api import sync_playwright, expect

TIMEOUT_MS = 60_000


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--keyed-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--jfk", required=True)
    parser.add_argument("--screenshots", required=True)
    return parser.parse_args()


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


def jfk_three_times(jfk, path):
    """jfk.wav, then three seconds of silence, three times over: 42 s, in 15-second chunks at most."""
    with wave.open(jfk, "rb") as source:
        params = source.getparams()
        frames = source.readframes(params.nframes)
    silence = b"\0" * params.sampwidth * params.nchannels * params.framerate * 3
    with wave.open(path, "wb") as out:
        out.setparams(params)
        for _ in range(3):
            out.writeframes(frames + silence)


def launch(playwright, jfk):
    return playwright.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            # This machine has no network: without these, Chromium's own requests fail by the dozen.
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={jfk}",
        ],
    )


def new_page(browser, width, height):
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True,
                            permissions=["clipboard-read", "clipboard-write"])
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Chromium logs each 4xx the page meets ("Failed to load resource"); those are the service's
    # answers, which the checks look at on the page. Anything else logged as an error is a bug.
    page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
            and errors.append(m.text))
    return page, errors


def wait_done(page):
    expect(page.locator("#progress-text")).to_contain_text("Done:", timeout=TIMEOUT_MS)
    expect(page.locator("#go")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_hidden()


def record_from_the_microphone(page):
    page.click("#record")
    expect(page.locator("#record")).to_have_text("Stop recording")
    page.wait_for_timeout(9000)  # jfk says "And so my fellow Americans" in its first 4 s
    page.click("#record")
    expect(page.locator("#source")).to_contain_text("Recording 0:0")
    page.click("#go")
    wait_done(page)
    words = page.locator("#segments").inner_text().lower()
    # Through the fake microphone, Opus and back, tiny.en hears "fellow American asked not".
    check("fellow american" in words and "your country" in words, f"a recording from the microphone shows jfk's words: {words!r}")


def upload_and_watch_it_stream(page, path):
    # Note when each segment appears and each state of the progress bar, to tell streamed from
    # all-at-once: a short file is done faster than a poll would look.
    page.evaluate("""() => {
        window.arrivals = [];
        window.bar = [];
        new MutationObserver(() => window.arrivals.push(performance.now()))
            .observe(document.getElementById('segments'), { childList: true });
        const progress = document.getElementById('progress');
        new MutationObserver(() => window.bar.push([progress.value, progress.max,
                document.getElementById('progress-text').textContent]))
            .observe(document.getElementById('progress-text'), { childList: true, characterData: true, subtree: true });
    }""")
    page.set_input_files("#file", path)
    expect(page.locator("#source")).to_contain_text("jfk-three-times.wav")
    page.click("#go")
    wait_done(page)
    bar = page.evaluate("window.bar")
    chunks = [m for m in bar if "chunk" in m[2]]
    check(chunks and chunks[0][1] >= 3, f"the progress bar counts the chunks: {chunks[0] if chunks else bar}")
    # Two workers take four chunks two at a time: the bar shows the first ones done before the end.
    done = [value for value, total, text in chunks if text.startswith("Transcribing: chunk")]
    check(done == sorted(done) and any(0 < v < chunks[0][1] for v in done), f"and fills as they finish: {done}")
    times = page.locator("#segments time").all_inner_texts()
    check(len(times) >= 4, f"the upload shows its segments: {len(times)}")
    check(all(re.fullmatch(r"\d+:\d\d\.\d – \d+:\d\d\.\d", t) for t in times), f"each segment shows its times: {times}")
    starts = [int(t.split(":")[0]) * 60 + float(t.split(":")[1].split(" ")[0]) for t in times]
    check(starts == sorted(starts) and starts[-1] > 28, f"segments are in order and reach the third jfk: {starts}")
    ends = [float(t.split("– ")[1].split(":")[1]) + 60 * int(t.split("– ")[1].split(":")[0]) for t in times]
    check(max(ends) <= 42.0, f"no segment runs past the end of the recording: {max(ends)}")
    arrivals = page.evaluate("window.arrivals")
    check(arrivals[-1] - arrivals[0] > 100, f"segments arrived over time, not at once: {arrivals[-1] - arrivals[0]:.0f} ms apart")
    text = page.locator("#segments").inner_text().lower()
    check(text.count("fellow americans") == 3, "all three jfks are transcribed")
    return len(times)


def downloads(page, count):
    def fetch(button):
        with page.expect_download() as info:
            page.click(button)
        return open(info.value.path(), encoding="utf-8").read(), info.value.suggested_filename
    srt, name = fetch("#download-srt")
    check(name == "jfk-three-times.srt", f"the SRT is named after the file: {name}")
    check(srt.startswith("1\n00:00:00,000 --> 00:00:") and srt.count(" --> ") == count, "the SRT has every segment")
    vtt, _ = fetch("#download-vtt")
    check(vtt.startswith("WEBVTT\n\n00:00:00.000 --> ") and vtt.count(" --> ") == count, "the VTT has every segment")
    txt, _ = fetch("#download-txt")
    check(txt.lower().count("ask what you can do for your country") == 3, "the text download has the transcript")


def service_error_shown_as_worded(page, base):
    """A file that is not audio: the page shows the service's own 400, word for word."""
    path = os.path.join(tempfile.mkdtemp(), "notes.wav")
    with open(path, "w") as f:
        f.write("meeting notes, not a recording\n")
    body = json.dumps({"content": base64.b64encode(open(path, "rb").read()).decode(), "stream": True}).encode()
    request = urllib.request.Request(base + "api/v1/transcriptions", body, {"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request)
        sys.exit("FAILED: the service took a text file for audio")
    except urllib.error.HTTPError as e:
        worded = json.load(e)["error"]
    page.set_input_files("#file", path)
    page.click("#go")
    expect(page.locator("#transcribe-error")).to_have_text(f"400: {worded}")
    check(True, f"a service error is shown as the service worded it: 400: {worded}")


def drop_a_file(page):
    """A file dropped on the page becomes the audio to transcribe, as one chosen would."""
    transfer = page.evaluate_handle("""() => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(44)], 'dropped.m4a', { type: 'audio/mp4' }));
        return transfer;
    }""")
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    expect(page.locator("#source")).to_have_text("dropped.m4a · 44 B")
    check(True, "a dropped file is taken")


def copy_text(page):
    page.click("#copy")
    expect(page.locator("#copied")).to_have_text("Copied.")
    copied = page.evaluate("navigator.clipboard.readText()")
    check(copied.lower().count("ask what you can do for your country") == 3, "Copy text puts the transcript on the clipboard")


def get_json(url):
    with urllib.request.urlopen(url) as response:
        return json.load(response)


def healthy_rows(page, model):
    return page.locator(f"#workers tr[data-state=healthy]:has(td:text-is('{model}'))")


def models_by_buttons(page):
    row = page.locator("#models tr[data-model=tiny-copy]")
    expect(row).to_contain_text("cold")
    row.get_by_role("button", name="Load tiny-copy").click()
    expect(row).to_contain_text("warm")
    expect(healthy_rows(page, "tiny-copy")).to_have_count(1)
    check(True, "the Load button warms a model and its worker shows in the pool")
    row.get_by_role("button", name="Unload tiny-copy").click()
    expect(row).to_contain_text("cold")
    expect(page.locator("#workers tr:has(td:text-is('tiny-copy'))")).to_have_count(0)
    check(True, "the Unload button stops it")


def kill_a_worker(page, base):
    expect(healthy_rows(page, "tiny.en")).to_have_count(2)
    victim = next(w for w in get_json(base + "api/v1/status")["workers"] if w["model"] == "tiny.en")
    os.kill(victim["pid"], signal.SIGKILL)
    expect(page.locator(f"#workers tr[data-worker='{victim['id']}']")).to_have_count(0)
    expect(healthy_rows(page, "tiny.en")).to_have_count(2)
    ids = page.locator("#workers tr[data-worker]").evaluate_all("rows => rows.map(r => r.dataset.worker)")
    check(victim["id"] not in ids, f"the pool view shows {victim['id']} replaced: {ids}")


def keyboard(page):
    page.focus("#tab-pool")
    page.keyboard.press("ArrowLeft")
    check(page.eval_on_selector("#transcribe", "s => !s.hidden"), "the arrow keys move between tabs")
    expect(page.locator("#tab-transcribe")).to_be_focused()
    page.keyboard.press("ArrowRight")
    check(page.eval_on_selector("#pool", "s => !s.hidden"), "and back")


def api_key(browser, url, key, shots):
    page, errors = new_page(browser, 1280, 900)
    urls, authorised = [], []
    page.on("request", lambda r: (urls.append(r.url), r.headers.get("authorization") and authorised.append(r.url)))
    page.goto(url + "#pool")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    check(True, "the page asks for the key")
    page.screenshot(path=os.path.join(shots, "key-prompt-desktop.png"))
    page.click("#key-cancel")
    expect(dialog).to_be_hidden()
    expect(page.locator("#pool-error")).to_contain_text("401: Missing or invalid API key")
    check(True, "closed without a key, the page says the service wants one instead of hanging")
    page.click("#tab-transcribe")
    page.click("#tab-pool")
    expect(dialog).to_be_visible()
    page.fill("#key", "a-wrong-key")
    page.press("#key", "Enter")
    expect(page.locator("#key-why")).to_contain_text("refused")
    check(True, "a wrong key is refused, in the service's words: " + page.locator("#key-why").inner_text())
    page.fill("#key", key)
    page.click("#key-form button[type=submit]")
    expect(dialog).to_be_hidden()
    expect(page.locator("#workers tr[data-worker]")).to_have_count(2)
    check(page.evaluate("sessionStorage.getItem('ism.apiKey')") == key, "the key is kept in session storage")
    page.reload()
    expect(page.locator("#workers tr[data-worker]")).to_have_count(2)
    check(not dialog.is_visible(), "and asked for once: a reload does not ask again")
    check(not any(key in u for u in urls), "the key is in no URL")
    check(any("/api/v1/status" in u for u in authorised), "it goes in the Authorization header")
    check(not errors, f"no script error: {errors}")
    page.close()


def main():
    args = parse_args()
    base = args.url if args.url.endswith("/") else args.url + "/"
    scratch = tempfile.mkdtemp()
    long_wav = os.path.join(scratch, "jfk-three-times.wav")
    jfk_three_times(args.jfk, long_wav)
    with sync_playwright() as playwright:
        browser = launch(playwright, args.jfk)

        page, errors = new_page(browser, 1280, 900)
        page.goto(base)
        expect(page.locator("#health")).to_contain_text("healthy")
        record_from_the_microphone(page)
        count = upload_and_watch_it_stream(page, long_wav)
        downloads(page, count)
        copy_text(page)
        page.screenshot(path=os.path.join(args.screenshots, "transcribe-desktop.png"), full_page=True)
        service_error_shown_as_worded(page, base)
        drop_a_file(page)
        page.click("#tab-pool")
        expect(page.locator("#history tr")).not_to_have_count(0)
        models_by_buttons(page)
        kill_a_worker(page, base)
        keyboard(page)
        page.screenshot(path=os.path.join(args.screenshots, "pool-desktop.png"), full_page=True)
        check(not errors, f"no script error: {errors}")
        page.close()

        phone, errors = new_page(browser, 390, 844)
        phone.goto(base)
        phone.set_input_files("#file", args.jfk)
        phone.click("#go")
        wait_done(phone)
        phone.screenshot(path=os.path.join(args.screenshots, "transcribe-phone.png"), full_page=True)
        phone.click("#tab-pool")
        expect(healthy_rows(phone, "tiny.en")).to_have_count(2)
        phone.screenshot(path=os.path.join(args.screenshots, "pool-phone.png"), full_page=True)
        width = phone.evaluate("document.documentElement.scrollWidth")
        check(width <= 390, f"nothing is wider than a phone's screen: {width} px")
        check(not errors, f"no script error: {errors}")
        phone.close()

        api_key(browser, args.keyed_url, args.key, args.screenshots)
        browser.close()
    print(f"screenshots in {args.screenshots}")


if __name__ == "__main__":
    main()
