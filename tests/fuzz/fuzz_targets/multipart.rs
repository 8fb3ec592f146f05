//! The multipart parser on arbitrary bodies: it never panics, and reading the body in small
//! pieces (which splits boundaries and headers everywhere) gives the same result as reading
//! it whole.
#![no_main]

use std::io::Read;

use inference_server_manager::http::multipart::{parse, read_form, FormError};
use libfuzzer_sys::fuzz_target;

/// Yields at most `step` bytes per read.
struct Dribble<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&step, body)) = input.split_first() else { return };
    let whole = parse(body, "xx");
    let pieces = read_form(&mut Dribble { data: body, step: usize::from(step % 16) + 1 }, "xx").map_err(|e| match e {
        FormError::Malformed(why) => why,
        FormError::Read(e) => e.to_string(),
    });
    assert_eq!(whole, pieces);
});
