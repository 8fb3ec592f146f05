//! `multipart/form-data` bodies, as an OpenAI client or whisper.cpp's own examples send them.

/// The boundary of every [`Form`]; a test that writes a broken body by hand can use it too.
pub const BOUNDARY: &str = "test-boundary-7MA4YWxk";

/// The `Content-Type` header of a [`Form`].
pub fn form_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A multipart body built part by part, in the order of the calls.
#[derive(Default)]
pub struct Form {
    body: Vec<u8>,
}

impl Form {
    pub fn new() -> Form {
        Form::default()
    }

    /// A text field.
    pub fn text(mut self, name: &str, value: &str) -> Form {
        self.body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
        self
    }

    /// Text fields, in order.
    pub fn texts(self, fields: &[(&str, &str)]) -> Form {
        fields
            .iter()
            .fold(self, |form, (name, value)| form.text(name, value))
    }

    /// `audio` as the field `file`, named `file_name`, of type `audio/wav`.
    pub fn file(mut self, file_name: &str, audio: &[u8]) -> Form {
        self.body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
                 Content-Type: audio/wav\r\n\r\n"
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(audio);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The whole body, closing boundary included.
    pub fn finish(mut self) -> Vec<u8> {
        self.body
            .extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        self.body
    }
}
