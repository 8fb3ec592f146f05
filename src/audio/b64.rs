//! Base64 of uploads, decoded fast in bulk: every quantum of four symbols but the last through
//! four lookup tables, the last one (which may be padded or short) and any input with a
//! symbol outside the alphabet through the `base64` crate, which words the errors. The crate
//! alone took 7.7 instructions a symbol, the most costly step of a JSON transcription request
//! after the thread hand-offs (a 1 s clip is 43 KB of base64).

use ::base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use ::base64::engine::DecodePaddingMode;
use ::base64::Engine as _;

/// Standard alphabet, padding optional: clients differ on it and it carries no information.
pub const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &::base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Marks a byte outside the alphabet in the tables: no valid quantum sets this bit.
const INVALID: u32 = 1 << 31;

/// The 24 bits of a quantum are `TABLES[0][s0] | TABLES[1][s1] | TABLES[2][s2] | TABLES[3][s3]`:
/// each symbol's six bits, already shifted into place.
static TABLES: [[u32; 256]; 4] = [table(18), table(12), table(6), table(0)];

const fn table(shift: u32) -> [u32; 256] {
    let mut table = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = (i as u32) << shift;
        i += 1;
    }
    table
}

/// Symbols decoded per block: its bytes are appended at once, and a block holding a byte
/// outside the alphabet stops the bulk decoding.
const BLOCK: usize = 64;

/// Decodes `text` (no whitespace) as `LENIENT` does, with the same errors.
pub fn decode(text: &[u8]) -> Result<Vec<u8>, ::base64::DecodeError> {
    // Decoded again whole when it fails, for the crate's error and its offset in the text.
    decode_valid(text).map_or_else(|| LENIENT.decode(text), Ok)
}

/// The bytes of `text` when it is valid base64 without whitespace; `None` otherwise, which
/// costs only the blocks read up to the first byte outside the alphabet.
pub fn decode_valid(text: &[u8]) -> Option<Vec<u8>> {
    // Whole quanta before the last one to four symbols, which the crate decodes as the last
    // quantum (the only one that may be padded or short) of the whole text too.
    let bulk = text.len().saturating_sub(1) / 4 * 4;
    let mut decoded = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let valid = decode_bulk(&text[..bulk], &mut decoded)
        && LENIENT.decode_vec(&text[bulk..], &mut decoded).is_ok();
    valid.then_some(decoded)
}

/// Appends the bytes of `text`, whole quanta of alphabet symbols only; false when a byte is not
/// one (then `decoded` holds part of the text).
fn decode_bulk(text: &[u8], decoded: &mut Vec<u8>) -> bool {
    let mut blocks = text.chunks_exact(BLOCK);
    for block in blocks.by_ref() {
        let block: &[u8; BLOCK] = block.try_into().expect("a whole block");
        // Two spare bytes: each pair of quanta is stored as 8 bytes, of which 6 are kept.
        let mut bytes = [0u8; BLOCK / 4 * 3 + 2];
        let mut seen = 0;
        for pair in 0..BLOCK / 8 {
            let (hi, lo) = (quantum(block, 8 * pair), quantum(block, 8 * pair + 4));
            seen |= hi | lo;
            let both = u64::from(hi) << 40 | u64::from(lo) << 16;
            bytes[6 * pair..6 * pair + 8].copy_from_slice(&both.to_be_bytes());
        }
        if seen & INVALID != 0 {
            return false;
        }
        decoded.extend_from_slice(&bytes[..BLOCK / 4 * 3]);
    }
    for four in blocks.remainder().chunks_exact(4) {
        let bits = quantum(four, 0);
        if bits & INVALID != 0 {
            return false;
        }
        decoded.extend_from_slice(&bits.to_be_bytes()[1..]);
    }
    true
}

/// The 24 bits of the quantum at `at`, with `INVALID` set if a symbol is not in the alphabet.
fn quantum(symbols: &[u8], at: usize) -> u32 {
    let [t0, t1, t2, t3] = &TABLES;
    t0[usize::from(symbols[at])]
        | t1[usize::from(symbols[at + 1])]
        | t2[usize::from(symbols[at + 2])]
        | t3[usize::from(symbols[at + 3])]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little pseudo-random generator, so the cases are the same on every run.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as u8
            })
            .collect()
    }

    #[test]
    fn decodes_what_the_crate_decodes_padded_or_not() {
        for len in (0..200).chain([4095, 4096, 4097, 43_000]) {
            let data = bytes(len as u64, len);
            let text = LENIENT.encode(&data);
            assert_eq!(decode(text.as_bytes()).unwrap(), data, "{len} bytes");
            let unpadded = text.trim_end_matches('=');
            assert_eq!(decode(unpadded.as_bytes()).unwrap(), data, "{len} unpadded");
        }
    }

    #[test]
    fn refuses_what_the_crate_refuses_with_its_words() {
        let text = LENIENT.encode(bytes(7, 3000));
        let mut cases: Vec<Vec<u8>> = Vec::new();
        // A byte outside the alphabet at each place of a quantum, in the bulk and in the last.
        for at in [0, 1, 2, 3, 1001, 2002, text.len() - 4, text.len() - 1] {
            for bad in [b'=', b'-', b'_', b'\n', 0x80, 0] {
                let mut case = text.as_bytes().to_vec();
                case[at] = bad;
                cases.push(case);
            }
        }
        // A stray symbol past the end, padding in the middle, trailing bits set.
        cases.push(format!("{text}A").into_bytes());
        cases.push(format!("QQ=={text}").into_bytes());
        cases.push(b"QR==".to_vec());
        cases.push(b"Q".to_vec());
        assert_eq!(
            decode_valid(b"QUJD\nREVG"),
            None,
            "whitespace is for the caller to drop"
        );
        for case in cases {
            assert_eq!(
                decode(&case).map_err(|e| e.to_string()),
                LENIENT.decode(&case).map_err(|e| e.to_string()),
                "{:?}",
                String::from_utf8_lossy(&case[..case.len().min(16)])
            );
        }
    }
}
