//! A small `multipart/form-data` parser over a body already in memory (RFC 7578 / 2046).
//! It serves the stub worker and the tests; it refuses anything it cannot read with certainty.

/// One part of the form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub file_name: Option<String>,
    pub data: Vec<u8>,
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

/// Splits `body` into its parts. Errors name what is wrong, for a 400.
pub fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delimiter, 0).ok_or("no multipart boundary in the body")?;
    let mut parts = Vec::new();
    loop {
        at += delimiter.len();
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        at = skip_line_end(body, at).ok_or("malformed multipart boundary line")?;
        let headers_end =
            find(body, b"\r\n\r\n", at).ok_or("multipart part without a header end")?;
        let headers = std::str::from_utf8(&body[at..headers_end])
            .map_err(|_| "multipart headers are not UTF-8")?;
        let (name, file_name) =
            disposition(headers).ok_or("multipart part without a form-data name")?;
        let data_start = headers_end + 4;
        let mut next_delimiter = b"\r\n".to_vec();
        next_delimiter.extend_from_slice(&delimiter);
        let data_end =
            find(body, &next_delimiter, data_start).ok_or("multipart body ends inside a part")?;
        parts.push(Part {
            name,
            file_name,
            data: body[data_start..data_end].to_vec(),
        });
        at = data_end + 2;
    }
}

fn skip_line_end(body: &[u8], at: usize) -> Option<usize> {
    // Transport padding (spaces/tabs) may precede the CRLF after a boundary.
    let mut i = at;
    while matches!(body.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    body[i..].starts_with(b"\r\n").then_some(i + 2)
}

/// `name` and `filename` from the part's `Content-Disposition: form-data` header.
fn disposition(headers: &str) -> Option<(String, Option<String>)> {
    let line = headers.split("\r\n").find(|l| {
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

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(boundary_of("multipart/form-data; boundary="), None);
    }

    #[test]
    fn parses_parts_with_preamble_and_padding() {
        let body = b"preamble\r\n--xx  \r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--xx\r\n\
content-disposition: form-data; name=file; filename=\"f.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--xx--\r\n";
        let parts = parse(body, "xx").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            Part {
                name: "a".into(),
                file_name: None,
                data: b"1".to_vec()
            }
        );
        assert_eq!(parts[1].file_name.as_deref(), Some("f.wav"));
        assert_eq!(parts[1].data, b"RIFF");
    }

    #[test]
    fn rejects_junk() {
        assert!(parse(b"nothing here", "xx").is_err());
        assert!(parse(b"--xx\r\nno header end", "xx").is_err());
        assert!(parse(
            b"--xx\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated",
            "xx"
        )
        .is_err());
        assert!(parse(b"--xx\r\nContent-Type: text/plain\r\n\r\nx\r\n--xx--", "xx").is_err());
        assert!(parse(b"--xx", "xx").is_err());
    }
}
