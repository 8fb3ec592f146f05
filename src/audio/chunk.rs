//! Cutting a long recording into chunks of at most `chunkSeconds` (whisper's own window is
//! 30 s) so the pool's workers can transcribe them in parallel.
//!
//! A cut inside a word garbles it on both sides, so each cut is placed in the quietest stretch
//! near its boundary, found by an energy-based voice-activity pass: the signal's energy in
//! 20 ms frames, in decibels, against a threshold set between the recording's own noise floor
//! (a low percentile) and its speech level (a high percentile), so it works for quiet and loud
//! recordings alike. Within the last `SEARCH` part of each chunk, the cut goes in the middle of
//! the longest run of quiet frames; with no quiet frame there (continuous speech, music), at
//! the quietest frame. Chunks never overlap, so the merged transcript can neither double nor
//! lose a word at a seam.

use std::ops::Range;

/// Frame length for the energy pass: 20 ms at 16 kHz, the usual VAD frame.
const FRAME: usize = 320;

/// The part of a chunk, before its longest allowed end, searched for a pause: long enough to
/// find one in natural speech (pauses come every few seconds), short enough that chunks stay
/// near the maximum length, which is what keeps the pool's workers busy for long stretches.
const SEARCH_FRACTION: f64 = 0.3;

/// Where the quiet threshold sits between the noise floor (0) and the speech level (1), in dB.
const QUIET_POINT: f64 = 0.3;

/// Frames this close to the quietest count as equally quiet.
const LEVEL_TIE_DB: f64 = 1.0;

/// A recording with this little spread between floor and speech has no pauses to find.
const MIN_DYNAMIC_RANGE_DB: f64 = 6.0;

/// The sample ranges of the chunks of `samples` (16 kHz mono), each at most `max_samples`
/// long, in order, covering every sample exactly once.
pub fn chunks(samples: &[i16], max_samples: usize) -> Vec<Range<usize>> {
    let max_samples = max_samples.max(FRAME * 2);
    if samples.len() <= max_samples {
        return std::iter::once(0..samples.len()).collect();
    }
    let energy = frame_energy_db(samples);
    let quiet = quiet_threshold(&energy);
    let max_frames = max_samples / FRAME;
    let search = ((max_frames as f64 * SEARCH_FRACTION) as usize).max(1);
    let mut ranges = Vec::new();
    let mut start = 0usize; // in frames
    loop {
        let remaining = samples.len() - start * FRAME;
        if remaining <= max_samples {
            ranges.push(start * FRAME..samples.len());
            return ranges;
        }
        let window = start + max_frames - search..start + max_frames;
        let cut = cut_in(&energy[window.clone()], quiet) + window.start;
        ranges.push(start * FRAME..cut * FRAME);
        start = cut;
    }
}

/// The frame (index into `window`) to cut at: the middle of the longest quiet run, else the
/// latest of the quietest frames (within `LEVEL_TIE_DB` of the minimum), which keeps chunks of
/// continuous sound as long as allowed. Never 0, so every chunk has at least one frame.
fn cut_in(window: &[f64], quiet: Option<f64>) -> usize {
    let mut best: Option<Range<usize>> = None;
    if let Some(threshold) = quiet {
        let mut run_start = None;
        for (i, e) in window
            .iter()
            .chain(std::iter::once(&f64::INFINITY))
            .enumerate()
        {
            match (run_start, *e <= threshold) {
                (None, true) => run_start = Some(i),
                (Some(s), false) => {
                    if best.as_ref().is_none_or(|b| i - s > b.len()) {
                        best = Some(s..i);
                    }
                    run_start = None;
                }
                _ => {}
            }
        }
    }
    let cut = match best {
        Some(run) => run.start + run.len() / 2,
        None => {
            let min = window.iter().copied().fold(f64::INFINITY, f64::min);
            window
                .iter()
                .rposition(|e| *e <= min + LEVEL_TIE_DB)
                .unwrap_or(window.len() - 1)
        }
    };
    cut.max(1)
}

/// The mean power of each 20 ms frame in dB (silence is about -100 dB, full scale 0 dB).
fn frame_energy_db(samples: &[i16]) -> Vec<f64> {
    samples
        .chunks(FRAME)
        .map(|frame| {
            let power = frame
                .iter()
                .map(|&s| {
                    let x = f64::from(s) / 32768.0;
                    x * x
                })
                .sum::<f64>()
                / frame.len() as f64;
            10.0 * (power + 1e-10).log10()
        })
        .collect()
}

/// The level under which a frame counts as a pause, or `None` when the recording has no
/// spread between its quiet and loud parts (all speech, all noise, all silence).
fn quiet_threshold(energy: &[f64]) -> Option<f64> {
    let mut sorted = energy.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    let (floor, speech) = (at(0.05), at(0.9));
    (speech - floor >= MIN_DYNAMIC_RANGE_DB).then_some(floor + QUIET_POINT * (speech - floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: usize = 16_000;

    /// Alternating "words" (a loud tone) and pauses (near silence), in seconds.
    fn speech(pattern: &[(f64, bool)]) -> Vec<i16> {
        let mut samples = Vec::new();
        for &(seconds, loud) in pattern {
            let n = (seconds * RATE as f64) as usize;
            samples.extend((0..n).map(|i| {
                let phase = i as f64 * 2.0 * std::f64::consts::PI * 220.0 / RATE as f64;
                let amplitude = if loud { 8000.0 } else { 30.0 };
                (phase.sin() * amplitude) as i16
            }));
        }
        samples
    }

    fn is_quiet(samples: &[i16], at: usize) -> bool {
        let around = &samples[at.saturating_sub(160)..(at + 160).min(samples.len())];
        around.iter().all(|s| s.abs() < 100)
    }

    #[test]
    fn short_audio_is_one_chunk() {
        assert_eq!(chunks(&[0; 1000], 16_000), vec![0..1000]);
        assert_eq!(chunks(&[], 16_000), vec![0..0]);
    }

    #[test]
    fn cuts_land_in_pauses_and_chunks_stay_within_the_limit() {
        // 2.2 s of speech then a 0.4 s pause, over and over: 2 minutes.
        let pattern: Vec<(f64, bool)> = (0..46).flat_map(|_| [(2.2, true), (0.4, false)]).collect();
        let samples = speech(&pattern);
        let max = 10 * RATE;
        let ranges = chunks(&samples, max);
        assert!(ranges.len() >= 12, "{ranges:?}");
        assert_eq!(ranges[0].start, 0);
        assert_eq!(ranges.last().unwrap().end, samples.len());
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "no gap, no overlap");
            assert!(
                is_quiet(&samples, pair[0].end),
                "cut at {} is in speech",
                pair[0].end
            );
        }
        for range in &ranges {
            assert!(range.len() <= max, "{range:?}");
        }
        for range in &ranges[..ranges.len() - 1] {
            assert!(
                range.len() >= max * 6 / 10,
                "chunks stay near the limit: {range:?}"
            );
        }
    }

    #[test]
    fn the_longest_pause_wins_within_the_search_window() {
        // A short pause and, later in the window, a long one.
        let samples = speech(&[
            (7.5, true),
            (0.1, false),
            (1.0, true),
            (0.8, false),
            (3.0, true),
        ]);
        let ranges = chunks(&samples, 10 * RATE);
        let cut = ranges[0].end as f64 / RATE as f64;
        assert!(
            (8.6..9.4).contains(&cut),
            "the middle of the 0.8 s pause: {cut}"
        );
    }

    #[test]
    fn continuous_sound_is_cut_at_the_limit_anyway() {
        let samples = speech(&[(25.0, true)]);
        let ranges = chunks(&samples, 10 * RATE);
        assert_eq!(ranges.len(), 3);
        assert!(ranges.iter().all(|r| r.len() <= 10 * RATE));
        assert_eq!(ranges.last().unwrap().end, samples.len());
    }

    #[test]
    fn silence_throughout_is_still_chunked() {
        let ranges = chunks(&vec![0i16; 35 * RATE], 10 * RATE);
        assert_eq!(ranges.last().unwrap().end, 35 * RATE);
        assert!(ranges.iter().all(|r| !r.is_empty() && r.len() <= 10 * RATE));
    }
}
