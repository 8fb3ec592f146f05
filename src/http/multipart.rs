//! A streaming `multipart/form-data` parser (RFC 7578 / RFC 2046 section 5.1).
//!
//! It reads the body in chunks from any `Read` and copies each part's bytes once, into the
//! part, so a form costs the size of its parts and not twice that: what it has parsed is
//! skipped with a cursor, not cut off the front of its buffer (which moved the rest of the
//! body, once per part). It refuses, with a reason
//! fit for a 400, anything it cannot read with certainty: no boundary, a part without a
//! `form-data` name, a header block over `MAX_HEADER_BYTES`, more than `MAX_PARTS` parts, or a
//! body that ends inside a part. Size and time limits belong to the reader it is given.
//!
//! Tolerated, because real clients send them: a preamble before the first boundary, transport
//! padding (spaces, tabs) after a boundary, parts in any order, quoted or bare parameter
//! values, and header lines ended by a bare LF.

use std::io::Read;

/// Longest header block of one part: a few lines of `Content-Disposition` and `Content-Type`.
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Most parts in one form: the widest form we take has seven fields.
const MAX_PARTS: usize = 64;

/// Bytes asked of the reader at a time.
const READ_CHUNK: usize = 64 * 1024;

/// One part of the form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub file_name: Option<String>,
    pub data: Vec<u8>,
}

/// Why a form could not be read.
#[derive(Debug)]
pub enum FormError {
    /// The form itself is malformed; the text says how.
    Malformed(String),
    /// The reader failed (its error says why: a limit, a timeout, a dropped connection).
    Read(std::io::Error),
}

impl From<&str> for FormError {
    fn from(why: &str) -> Self {
        FormError::Malformed(why.to_string())
    }
}

/// The boundary parameter of a `multipart/form-data` content type, quoted or not.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty() && value.len() <= 70).then(|| value.to_string())
    })
}

/// Reads the whole form from `reader`.
pub fn read_form(reader: &mut dyn Read, boundary: &str) -> Result<Vec<Part>, FormError> {
    Parser::new(reader, boundary).run()
}

/// Parses a form already in memory.
pub fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    read_form(&mut &body[..], boundary).map_err(|e| match e {
        FormError::Malformed(why) => why,
        FormError::Read(e) => e.to_string(),
    })
}

struct Parser<'r> {
    reader: &'r mut dyn Read,
    /// `\r\n--boundary`: what ends a part's data.
    delimiter: Vec<u8>,
    /// Bytes read; those before `at` are consumed.
    buffer: Vec<u8>,
    at: usize,
    eof: bool,
}

impl<'r> Parser<'r> {
    fn new(reader: &'r mut dyn Read, boundary: &str) -> Parser<'r> {
        // The first boundary may open the body without a line break before it; a virtual CRLF
        // in front lets one search find it either way (the preamble is discarded).
        Parser {
            reader,
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            buffer: b"\r\n".to_vec(),
            at: 0,
            eof: false,
        }
    }

    fn run(mut self) -> Result<Vec<Part>, FormError> {
        self.skip_to_delimiter()?;
        let mut parts = Vec::new();
        while self.after_delimiter()? {
            if parts.len() == MAX_PARTS {
                return Err(FormError::Malformed(format!("more than {MAX_PARTS} parts")));
            }
            let (name, file_name) = self.headers()?;
            let data = self.data()?;
            parts.push(Part {
                name,
                file_name,
                data,
            });
        }
        Ok(parts)
    }

    /// The bytes read and not yet consumed.
    fn pending(&self) -> &[u8] {
        &self.buffer[self.at..]
    }

    fn consume(&mut self, n: usize) {
        self.at += n;
    }

    /// Reads one more chunk after the pending bytes, which move to the front of the buffer
    /// first; `false` at the end of the body. (`read_to_end` on a `take` fills spare capacity
    /// without zeroing it first.)
    fn fill(&mut self) -> Result<bool, FormError> {
        if self.eof {
            return Ok(false);
        }
        self.buffer.drain(..self.at);
        self.at = 0;
        let before = self.buffer.len();
        (&mut *self.reader)
            .take(READ_CHUNK as u64)
            .read_to_end(&mut self.buffer)
            .map_err(FormError::Read)?;
        self.eof = self.buffer.len() == before;
        Ok(!self.eof)
    }

    /// Discards the preamble up to and including the first delimiter.
    fn skip_to_delimiter(&mut self) -> Result<(), FormError> {
        loop {
            if let Some(at) = find(self.pending(), &self.delimiter) {
                self.consume(at + self.delimiter.len());
                return Ok(());
            }
            // Keep a tail that may hold the start of a split delimiter.
            let keep = self.delimiter.len() - 1;
            self.consume(self.pending().len().saturating_sub(keep));
            if !self.fill()? {
                return Err("no multipart boundary in the body".into());
            }
        }
    }

    /// After a delimiter: `--` closes the form (`false`), else padding and a line break open
    /// the next part (`true`).
    fn after_delimiter(&mut self) -> Result<bool, FormError> {
        loop {
            let pending = self.pending();
            let padding = pending
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t'))
                .count();
            let rest = &pending[padding..];
            if pending.starts_with(b"--") {
                return Ok(false);
            }
            if let Some(line_break) = [&b"\r\n"[..], b"\n"]
                .into_iter()
                .find(|lb| rest.starts_with(lb))
            {
                self.consume(padding + line_break.len());
                return Ok(true);
            }
            let undecided = rest.is_empty() || rest == b"\r" || pending == b"-";
            if !undecided || padding > 128 {
                return Err("malformed multipart boundary line".into());
            }
            if !self.fill()? {
                return Err("the multipart body ends after a boundary".into());
            }
        }
    }

    /// The part's header block: its `form-data` name and file name.
    fn headers(&mut self) -> Result<(String, Option<String>), FormError> {
        loop {
            // Only the first `MAX_HEADER_BYTES` can hold the block's end; the part's data
            // follows it, and searching that too cost a scan of the whole upload.
            let pending = self.pending();
            let head = &pending[..pending.len().min(MAX_HEADER_BYTES + 4)];
            if let Some((at, separator)) = blank_line(head) {
                let block = String::from_utf8_lossy(&head[..at]).into_owned();
                self.consume(at + separator);
                return disposition(&block)
                    .ok_or_else(|| "a multipart part has no form-data name".into());
            }
            if pending.len() > MAX_HEADER_BYTES {
                return Err(FormError::Malformed(format!(
                    "multipart part headers over {MAX_HEADER_BYTES} bytes"
                )));
            }
            if !self.fill()? {
                return Err("the multipart body ends inside part headers".into());
            }
        }
    }

    /// The part's bytes up to the next delimiter, which is consumed.
    fn data(&mut self) -> Result<Vec<u8>, FormError> {
        let mut data = Vec::new();
        loop {
            if let Some(at) = find(self.pending(), &self.delimiter) {
                data.extend_from_slice(&self.pending()[..at]);
                self.consume(at + self.delimiter.len());
                return Ok(data);
            }
            let keep = self.delimiter.len() - 1;
            let flush = self.pending().len().saturating_sub(keep);
            data.extend_from_slice(&self.pending()[..flush]);
            self.consume(flush);
            if !self.fill()? {
                return Err("the multipart body ends inside a part".into());
            }
        }
    }
}

/// `name` and `filename` from a part's `Content-Disposition: form-data` header.
fn disposition(headers: &str) -> Option<(String, Option<String>)> {
    let line = headers.lines().find(|l| {
        l.split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
    })?;
    let (_, value) = line.split_once(':')?;
    let mut params = value.split(';');
    if !params.next()?.trim().eq_ignore_ascii_case("form-data") {
        return None;
    }
    let mut name = None;
    let mut file_name = None;
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(value),
            "filename" => file_name = Some(value),
            _ => {}
        }
    }
    Some((name?, file_name))
}

/// The first blank line of a header block: where it starts and how long it is. Whichever
/// comes first ends the block: CRLF CRLF, or a bare LF LF.
fn blank_line(head: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(offset) = position_of(head.get(from..)?, b'\n') {
        let lf = from + offset;
        let after = &head[lf + 1..];
        if after.starts_with(b"\n") {
            return Some((lf, 2));
        }
        if lf > 0 && head[lf - 1] == b'\r' && after.starts_with(b"\r\n") {
            return Some((lf - 1, 4));
        }
        from = lf + 1;
    }
    None
}

/// Where `needle` first occurs in `haystack`. It jumps between occurrences of the needle's
/// first two bytes and compares only there: comparing at every position (`windows`) made this
/// search most of the cost of a request, and audio holds any one byte every 256 on average
/// (a delimiter's CR, a boundary's dash), but a given pair only every 65,536. An empty needle
/// is found nowhere.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let Some((&second, rest)) = rest.split_first() else {
        return position_of(haystack, first);
    };
    let mut from = 0;
    while let Some(offset) = position_of_pair(haystack.get(from..)?, [first, second]) {
        let at = from + offset;
        if haystack[at + 2..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Where `pair` first occurs in `haystack`, a block of positions at a time as `position_of`
/// does (each block compares two overlapping runs of bytes, which vectorizes).
fn position_of_pair(haystack: &[u8], pair: [u8; 2]) -> Option<usize> {
    const BLOCK: usize = 32;
    // `&`, not `&&`: no branch per byte, so the block's compares vectorize.
    let at_pair = |(&a, &b): (&u8, &u8)| (a == pair[0]) & (b == pair[1]);
    let mut start = 0;
    while start + BLOCK < haystack.len() {
        let (firsts, seconds) = (
            &haystack[start..start + BLOCK],
            &haystack[start + 1..start + BLOCK + 1],
        );
        let pairs = || firsts.iter().zip(seconds);
        if pairs().fold(false, |seen, p| seen | at_pair(p)) {
            return pairs().position(at_pair).map(|at| start + at);
        }
        start += BLOCK;
    }
    let tail = haystack.get(start..)?;
    tail.iter()
        .zip(tail.iter().skip(1))
        .position(at_pair)
        .map(|at| start + at)
}

/// Where `byte` first occurs in `haystack`. Each block of `BLOCK` bytes is tested whole, with
/// no early exit, which the compiler turns into vector compares; only a block that holds the
/// byte is then looked at byte by byte. About a tenth of the instructions of `position`, in
/// the search that passes over every byte of an upload.
fn position_of(haystack: &[u8], byte: u8) -> Option<usize> {
    const BLOCK: usize = 32;
    let mut blocks = haystack.chunks_exact(BLOCK);
    for (i, block) in blocks.by_ref().enumerate() {
        if block.iter().fold(false, |seen, &b| seen | (b == byte)) {
            return block
                .iter()
                .position(|&b| b == byte)
                .map(|at| i * BLOCK + at);
        }
    }
    let tail = blocks.remainder();
    let tail_start = haystack.len() - tail.len();
    tail.iter()
        .position(|&b| b == byte)
        .map(|at| tail_start + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields at most `step` bytes per read, to split delimiters and headers everywhere.
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

    fn form(body: &[u8], boundary: &str) -> Vec<Part> {
        let whole = parse(body, boundary).unwrap();
        for step in [1, 2, 3, 7, 64] {
            let dribbled = read_form(&mut Dribble { data: body, step }, boundary).unwrap();
            assert_eq!(dribbled, whole, "reads of {step} bytes");
        }
        whole
    }

    const BODY: &[u8] = b"--xx\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n\
RIFF\r\n--x not a boundary\r\n\r\n--xx--\r\n";

    #[test]
    fn boundary_quoted_and_unquoted() {
        assert_eq!(
            boundary_of("multipart/form-data; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary_of("Multipart/Form-Data; charset=x; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary_of("application/json"), None);
        assert_eq!(boundary_of("multipart/form-data"), None);
        assert_eq!(boundary_of("multipart/form-data; boundary="), None);
        assert_eq!(
            boundary_of(&format!("multipart/form-data; boundary={}", "b".repeat(71))),
            None
        );
    }

    #[test]
    fn parts_in_any_order_with_binary_data() {
        let parts = form(BODY, "xx");
        assert_eq!(
            parts[0],
            Part {
                name: "model".into(),
                file_name: None,
                data: b"whisper-1".to_vec()
            }
        );
        assert_eq!(parts[1].name, "file");
        assert_eq!(parts[1].file_name.as_deref(), Some("a.wav"));
        assert_eq!(parts[1].data, b"RIFF\r\n--x not a boundary\r\n");
    }

    #[test]
    fn preamble_padding_bare_lf_headers_and_epilogue() {
        let body = b"preamble\r\n--xx \t\r\ncontent-disposition: form-data; name=a\n\n1\r\n--xx\n\
Content-Disposition: form-data; name=\"b\"\r\n\r\n\r\n--xx--epilogue";
        let parts = form(body, "xx");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].data, b"1");
        assert_eq!(parts[1].data, b"", "an empty value");
    }

    #[test]
    fn boundary_at_the_very_start_and_empty_form() {
        assert_eq!(form(b"--xx--", "xx"), Vec::new());
        assert_eq!(form(b"--xx--\r\n", "xx"), Vec::new());
    }

    #[test]
    fn junk_is_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"nothing here", "no multipart boundary"),
            (b"--xx\r\nno header end", "ends inside part headers"),
            (
                b"--xx\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated",
                "ends inside a part",
            ),
            (
                b"--xx\r\nContent-Type: text/plain\r\n\r\nx\r\n--xx--",
                "no form-data name",
            ),
            (
                b"--xx\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--xx--",
                "no form-data name",
            ),
            (b"--xxjunk\r\n", "malformed multipart boundary line"),
            (b"--xx", "ends after a boundary"),
            (b"--xx\r", "ends after a boundary"),
        ];
        for (body, why) in cases {
            let err = parse(body, "xx").unwrap_err();
            assert!(
                err.contains(why),
                "{:?}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn header_blocks_and_part_counts_are_bounded() {
        let mut body = b"--xx\r\nContent-Disposition: form-data; name=a\r\nX-Long: ".to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES + READ_CHUNK));
        assert!(parse(&body, "xx").unwrap_err().contains("headers over"));
        let mut many = Vec::new();
        for i in 0..=MAX_PARTS {
            many.extend_from_slice(
                format!("--xx\r\nContent-Disposition: form-data; name=f{i}\r\n\r\nv\r\n")
                    .as_bytes(),
            );
        }
        many.extend_from_slice(b"--xx--");
        assert!(parse(&many, "xx").unwrap_err().contains("more than"));
    }

    #[test]
    fn find_finds_first_occurrences_only() {
        assert_eq!(find(b"abcabc", b"bc"), Some(1));
        assert_eq!(find(b"aaab", b"aab"), Some(1));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"", b"a"), None);
        assert_eq!(find(b"abc", b""), None);
        assert_eq!(find(b"xx\r\n--b", b"\r\n--b"), Some(2));
        let long: Vec<u8> = (0..200u8).map(|i| i % 100).collect();
        assert_eq!(find(&long, &[99, 0, 1]), Some(99));
        assert_eq!(find(&long, &[150]), None);
    }

    #[test]
    fn find_looks_at_every_position_of_every_block_and_the_tail() {
        for len in [1, 2, 31, 32, 33, 64, 65, 100] {
            for at in 0..len {
                let mut haystack = vec![b'-'; len + 3];
                haystack[at..at + 3].copy_from_slice(b"\r\n-");
                assert_eq!(find(&haystack, b"\r\n-"), Some(at), "{len} bytes, at {at}");
                assert_eq!(find(&haystack[..at + 2], b"\r\n-"), None, "cut short");
            }
        }
    }

    #[test]
    fn position_of_looks_in_every_block_and_the_tail() {
        let bytes: Vec<u8> = (0..=255u8).chain(0..=5).collect();
        for byte in [0u8, 31, 32, 100, 255] {
            assert_eq!(position_of(&bytes, byte), Some(usize::from(byte)));
        }
        assert_eq!(position_of(&bytes[256..], 5), Some(5));
        assert_eq!(position_of(&bytes[..200], 250), None);
        assert_eq!(position_of(&[], 0), None);
    }

    #[test]
    fn a_header_block_ends_at_its_first_blank_line() {
        assert_eq!(blank_line(b"a: b\r\n\r\ndata\n\n"), Some((4, 4)));
        assert_eq!(blank_line(b"a: b\n\ndata\r\n\r\n"), Some((4, 2)));
        assert_eq!(blank_line(b"a: b\r\n\n"), Some((5, 2)));
        assert_eq!(blank_line(b"a: b\r\nc: d\r\n"), None);
    }

    #[test]
    fn reader_errors_are_reported_as_such() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "too slow",
                ))
            }
        }
        assert!(matches!(
            read_form(&mut Broken, "xx"),
            Err(FormError::Read(_))
        ));
    }
}
