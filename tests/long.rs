//! Long recordings (README "Formats and long recordings"): cut at pauses, transcribed by every
//! worker of the pool at once, merged in order with their times; a short clip is not stuck
//! behind a long file; a worker killed mid-file loses no chunk; bad input is a clear 4xx.
//!
//! The stub runs with `--words-from-pcm`: each burst of sound it receives is a word named by
//! the burst's peak, with its times. The recordings here are bursts of a square wave whose
//! amplitude numbers them, so the transcript says exactly which audio reached a worker.

mod support;

use serde_json::json;
use support::*;

const RATE: usize = 16_000;

/// `count` words of `word_s` seconds, each followed by `pause_s` of silence; word `k` is a
/// square wave of amplitude `1000 + 10 k`, which the stub names `w<amplitude>`.
fn numbered_speech(count: usize, word_s: f64, pause_s: f64) -> Vec<u8> {
    let mut samples: Vec<i16> = Vec::new();
    for k in 0..count {
        let amplitude = 1000 + 10 * k as i16;
        let word = (word_s * RATE as f64) as usize;
        samples.extend((0..word).map(|i| {
            if (i / 20) % 2 == 0 {
                amplitude
            } else {
                -amplitude
            }
        }));
        samples.extend(std::iter::repeat_n(0, (pause_s * RATE as f64) as usize));
    }
    pcm_wav(&samples)
}

fn pcm_wav(samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&(RATE as u32).to_le_bytes());
    wav.extend_from_slice(&(RATE as u32 * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    wav
}

fn expected_words(count: usize) -> Vec<String> {
    (0..count).map(|k| format!("w{}", 1000 + 10 * k)).collect()
}

fn long_setup() -> Setup {
    Setup::new()
        .stub(&["--words-from-pcm", "--delay-ms", "100"])
        .set("audio", "chunkSeconds", json!(5))
}

/// Waits until `n` workers have run an inference, by their logs (written a moment after).
fn workers_used(manager: &Manager, n: usize) -> bool {
    wait_for(SOON, || {
        let used = manager
            .workers()
            .iter()
            .filter(|w| manager.worker_log(&w["port"]).contains("inference 1:"))
            .count();
        (used >= n).then_some(())
    })
    .is_some()
}

#[test]
fn a_long_recording_is_cut_at_pauses_run_on_every_worker_and_merged_in_order() {
    let manager = long_setup().start();
    manager.wait_healthy(2);
    // 40 words of 0.6 s with 0.4 s pauses: 40 s, so 8 or more chunks of at most 5 s.
    let audio = numbered_speech(40, 0.6, 0.4);
    let reply = manager.post_json(
        "/api/v1/transcriptions",
        &json!({ "content": b64(&audio), "timestamps": true }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let result = &reply.json()["result"];
    let words: Vec<&str> = result["text"].as_str().unwrap().split(' ').collect();
    assert_eq!(
        words,
        expected_words(40),
        "every word once, in order: no seam lost or doubled one"
    );
    assert!((result["duration"].as_f64().unwrap() - 40.0).abs() < 0.01);
    let segments = result["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 40);
    for (k, segment) in segments.iter().enumerate() {
        let start = segment["start"].as_f64().unwrap();
        assert!(
            (start - k as f64).abs() < 0.01,
            "word {k} starts at {start}: its chunk's offset was applied"
        );
    }
    assert!(workers_used(&manager, 2), "both workers took chunks");
    let chunks = manager
        .wait_worker_logs(" s, words ")
        .matches(" s, words ")
        .count();
    assert!(chunks >= 8, "{chunks} chunks");
}

#[test]
fn a_short_clip_waits_for_at_most_one_chunk_of_a_long_recording() {
    let manager = long_setup().pool(1).stub(&["--delay-ms", "300"]).start();
    manager.wait_healthy(1);
    let long = numbered_speech(30, 0.6, 0.4);
    std::thread::scope(|scope| {
        let long_request = scope.spawn(|| manager.transcribe(&long));
        // Wait until the long recording's chunks are under way, then send a clip.
        wait_for(SOON, || {
            (manager.worker_logs().matches("inference ").count() >= 2).then_some(())
        })
        .expect("the long recording started");
        let before = manager.worker_logs().matches("inference ").count();
        let clip = pcm_wav(&vec![7000i16; RATE / 2]);
        let reply = manager.transcribe(&clip);
        assert_eq!(reply.json()["result"]["text"], "w7000", "{}", reply.text());
        let log = manager.wait_worker_logs("words w7000");
        let position = log
            .lines()
            .filter(|l| l.contains("inference "))
            .position(|l| l.contains("words w7000"))
            .expect("the clip reached the worker");
        assert!(
            position <= before + 1,
            "the clip was inference {} but {before} had started when it came: it waited for more than the chunk in progress",
            position + 1
        );
        assert_eq!(long_request.join().unwrap().status, 200);
    });
}

#[test]
fn a_worker_killed_mid_recording_loses_no_chunk() {
    let manager = long_setup().stub(&["--delay-ms", "250"]).start();
    manager.wait_healthy(2);
    let audio = numbered_speech(40, 0.6, 0.4);
    std::thread::scope(|scope| {
        let request = scope.spawn(|| manager.transcribe(&audio));
        let busy = manager.busy_worker();
        signal(pid_of(&busy), "KILL");
        let reply = request.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let words: Vec<String> = reply.json()["result"]["text"]
            .as_str()
            .unwrap()
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(words, expected_words(40));
    });
    manager.wait_healthy(2);
}

#[test]
fn progress_shows_in_the_status_while_a_recording_runs() {
    let manager = long_setup().pool(1).stub(&["--delay-ms", "300"]).start();
    manager.wait_healthy(1);
    let audio = numbered_speech(20, 0.6, 0.4);
    std::thread::scope(|scope| {
        let request = scope.spawn(|| manager.transcribe(&audio));
        let running = wait_for(SOON, || {
            let status = manager.status();
            let run = status["transcriptions"].get(0).cloned()?;
            (run["chunksDone"].as_u64()? >= 1).then_some(run)
        })
        .expect("the run is listed with its chunks");
        assert!(running["chunksTotal"].as_u64().unwrap() >= 4, "{running}");
        assert_eq!(running["audioSeconds"], 20.0);
        assert_eq!(request.join().unwrap().status, 200);
    });
    assert_eq!(
        manager.status()["transcriptions"],
        json!([]),
        "gone when done"
    );
    let metrics = manager.get("/metrics").text();
    assert!(
        metrics.contains("ism_audio_seconds_total{model=\"default\"} 20"),
        "{metrics}"
    );
}

/// The events of a server-sent event stream: (name, data) pairs; `name` is "" for a `data:`
/// line without an `event:`.
fn events(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter(|block| block.contains("data: "))
        .map(|block| {
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap();
            (name.to_string(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

/// Posts `body` to `/api/v1/transcriptions` and reads the stream up to its first segment;
/// returns the connection and the bytes read so far.
fn stream_to_first_segment(
    manager: &Manager,
    body: &serde_json::Value,
) -> (std::net::TcpStream, Vec<u8>) {
    let mut stream = connect_with(
        manager.port,
        format!(
            "POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.to_string().len()
        )
        .as_bytes(),
    );
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("event: segment") {
        let n = std::io::Read::read(&mut stream, &mut buf).unwrap();
        assert!(
            n > 0,
            "the stream ended before a segment: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
    (stream, received)
}

#[test]
fn a_stream_sends_segments_in_order_as_chunks_finish_then_the_result() {
    let manager = long_setup().stub(&["--delay-ms", "200"]).start();
    manager.wait_healthy(2);
    let audio = numbered_speech(30, 0.6, 0.4);
    let body = json!({ "content": b64(&audio), "stream": true, "metadata": { "job": "7" } });
    // The first segment arrives while the recording is still being transcribed.
    let (mut stream, mut received) = stream_to_first_segment(&manager, &body);
    let running = manager.status()["transcriptions"].as_array().unwrap().len();
    assert_eq!(running, 1, "a segment came before the transcription ended");
    std::io::Read::read_to_end(&mut stream, &mut received).unwrap();
    let (head, body) = dechunk(&received);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let payload = String::from_utf8(body).unwrap();
    let events = events(&payload);
    assert_eq!(events[0].0, "begin");
    let segments: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "segment")
        .map(|(_, data)| data["text"].as_str().unwrap())
        .collect();
    assert_eq!(segments, expected_words(30));
    let (last, result) = events.last().unwrap();
    assert_eq!(last, "result");
    assert_eq!(result["result"]["text"], expected_words(30).join(" "));
    assert_eq!(result["result"]["metadata"]["job"], "7");
    let progress: Vec<u64> = events
        .iter()
        .filter_map(|(_, data)| data["chunksDone"].as_u64())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
}

#[test]
fn a_client_that_leaves_a_stream_stops_the_chunks_not_yet_begun() {
    let manager = long_setup().pool(1).stub(&["--delay-ms", "300"]).start();
    manager.wait_healthy(1);
    let audio = numbered_speech(60, 0.6, 0.4); // 60 s: 12 chunks of 5 s, 300 ms each
    let body = json!({ "content": b64(&audio), "stream": true });
    let (stream, _) = stream_to_first_segment(&manager, &body);
    drop(stream); // the client leaves, as the page's Cancel does
    wait_until_ended_by_its_client(&manager);
    let served = manager.workers()[0]["requestCount"].as_u64().unwrap();
    // The server learns the client left from the next event or two it cannot deliver.
    assert!(
        served <= 5,
        "{served} of 12 chunks ran after the client left"
    );
}

/// Waits for the one transcription running to end, and checks the history says its client
/// left.
fn wait_until_ended_by_its_client(manager: &Manager) {
    wait_for(SOON, || {
        manager.status()["transcriptions"]
            .as_array()?
            .is_empty()
            .then_some(())
    })
    .expect("the run ends");
    let history = manager.get("/api/inference/history").json();
    assert_eq!(history["history"][0]["success"], false, "{history}");
    assert_eq!(
        history["history"][0]["error"], "CLIENT_CLOSED_REQUEST",
        "{history}"
    );
}

/// Sends `body` to the JSON route on a connection of its own with `Connection: close`.
fn post_closing(manager: &Manager, body: &serde_json::Value) -> std::net::TcpStream {
    let body = body.to_string();
    let head = format!(
        "POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    connect_with(manager.port, (head + &body).as_bytes())
}

#[test]
fn a_client_that_leaves_before_its_answer_stops_the_chunks_not_yet_begun() {
    let manager = long_setup().pool(1).stub(&["--delay-ms", "300"]).start();
    manager.wait_healthy(1);
    let audio = numbered_speech(60, 0.6, 0.4); // 60 s: 12 chunks of 5 s, 300 ms each
    let body = json!({ "content": b64(&audio) });
    // A client that stays, though tiny_http has shut its reading half (Connection: close),
    // gets the whole answer.
    let mut stays = post_closing(&manager, &body);
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stays, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&expected_words(60).join(" ")), "{answer}");
    let before = manager.workers()[0]["requestCount"].as_u64().unwrap();
    let leaves = post_closing(&manager, &body);
    wait_for(SOON, || {
        (!manager.status()["transcriptions"].as_array()?.is_empty()).then_some(())
    })
    .expect("the run begins");
    drop(leaves);
    wait_until_ended_by_its_client(&manager);
    let served = manager.workers()[0]["requestCount"].as_u64().unwrap() - before;
    // The client is asked about as each chunk is done.
    assert!(
        served <= 4,
        "{served} of 12 chunks ran after the client left"
    );
}

#[test]
fn recordings_past_the_limit_or_not_audio_are_refused_before_any_inference() {
    let manager = long_setup().set("audio", "maxSeconds", json!(10)).start();
    manager.wait_healthy(2);
    let too_long = manager.transcribe(&numbered_speech(12, 0.6, 0.4));
    assert_eq!(too_long.status, 413, "{}", too_long.text());
    assert_eq!(too_long.error_code(), "AUDIO_TOO_LONG");
    let mut m4a = b"\0\0\0\x20ftypM4A ".to_vec();
    m4a.resize(4000, 0);
    let unsupported = manager.transcribe(&m4a);
    assert_eq!(unsupported.status, 415, "{}", unsupported.text());
    assert_eq!(unsupported.error_code(), "UNSUPPORTED_MEDIA_TYPE");
    assert!(unsupported.text().contains("m4a") && unsupported.text().contains("install ffmpeg"));
    assert!(
        !manager.worker_logs().contains("inference 1:"),
        "no worker was asked"
    );
}

#[test]
#[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
fn hostile_files_get_ffmpegs_reason_and_nothing_is_read_for_them() {
    needs::program("ffmpeg", "apt-get install ffmpeg");
    let manager = long_setup().with_ffmpeg().start();
    manager.wait_healthy(2);
    let playlist =
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n";
    let concat = b"ffconcat version 1.0\n# a list of files to join, which ffmpeg must never open\nfile /etc/passwd\n";
    let mut renamed =
        b"This is a text file that someone renamed to notes.m4a, not audio.\n".repeat(4);
    renamed.truncate(200);
    for (what, body) in [
        ("HLS playlist", &playlist[..]),
        ("ffconcat list", &concat[..]),
        ("text as m4a", &renamed[..]),
    ] {
        let reply = manager.transcribe(body);
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        assert!(reply.text().contains("ffmpeg"), "{what}: {}", reply.text());
        assert!(!reply.text().contains("root:"), "{what} read /etc/passwd");
    }
    let metrics = manager.get("/metrics").text();
    assert!(
        metrics.contains("ism_conversion_failures_total 3"),
        "{metrics}"
    );
    assert_eq!(
        manager.transcribe(&numbered_speech(2, 0.5, 0.3)).status,
        200,
        "still serving"
    );
}
