//! The settings file: JSON5 parsed through `serde_json::Value`, so a wrong type is reported
//! as `file:line: key` and an unknown key is warned about and skipped instead of refusing to
//! start; and the commented file of defaults that `serve` writes on first run.

use std::path::Path;

use serde_json::Value;

use super::{Settings, SettingsError};

/// Writes the default settings to `path`, creating its directory. Used by `serve` on first run
/// and by `config init`.
pub fn write_defaults(path: &Path) -> Result<(), SettingsError> {
    let fail = |e: std::io::Error| SettingsError {
        file: Some(path.to_path_buf()),
        line: None,
        key: None,
        message: format!("cannot write the default settings: {e}"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(path, default_file_text()).map_err(fail)
}

/// The defaults as a commented JSON5 file; JSON is valid JSON5, so the body is the serialized
/// defaults and stays in step with the structs by construction.
pub fn default_file_text() -> String {
    let body = serde_json::to_string_pretty(&Settings::default()).expect("defaults serialize");
    format!(
        "// inference-server-manager settings (JSON5: comments and trailing commas are fine).\n\
         // Precedence: command-line flag > environment variable > this file > built-in default.\n\
         // Set whisperServer.cmd to your whisper-server binary, or run scripts/setup-whisper.sh.\n\
         {body}\n"
    )
}

/// Parses the file text, checks every key against the defaults' shape, and deserializes;
/// unknown keys are added to `warnings`. (`load` without the file system, and a fuzz target.)
pub fn parse_file(
    text: &str,
    file: &Path,
    warnings: &mut Vec<String>,
) -> Result<Settings, SettingsError> {
    let user: Value = json5::from_str(text).map_err(|e| SettingsError {
        file: Some(file.to_path_buf()),
        line: e.position().map(|p| p.line + 1),
        key: None,
        message: format!("not valid JSON5: {e}"),
    })?;
    let defaults = serde_json::to_value(Settings::default()).expect("defaults serialize");
    let mut problems = Vec::new();
    check_shape(&user, &defaults, "", &mut problems);
    for problem in problems {
        let line = line_of_key(text, &problem.path);
        match problem.kind {
            ProblemKind::Unknown => warnings.push(format!(
                "{}:{}: unknown key `{}` is ignored",
                file.display(),
                line.map_or_else(|| "?".to_string(), |l| l.to_string()),
                problem.path
            )),
            ProblemKind::WrongType(expected) => {
                return Err(SettingsError {
                    file: Some(file.to_path_buf()),
                    line,
                    key: Some(problem.path),
                    message: format!("expected {expected}"),
                })
            }
        }
    }
    let user = strip_unknown(user, &defaults);
    serde_json::from_value(user).map_err(|e| SettingsError {
        file: Some(file.to_path_buf()),
        line: None,
        key: None,
        message: e.to_string(),
    })
}

struct Problem {
    path: String,
    kind: ProblemKind,
}

enum ProblemKind {
    Unknown,
    WrongType(&'static str),
}

fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Walks `user` alongside `defaults` and records unknown keys and values of the wrong kind.
/// `models` is a free-form map whose entries are checked against `ModelSettings`.
fn check_shape(user: &Value, defaults: &Value, path: &str, problems: &mut Vec<Problem>) {
    let (Value::Object(user), Value::Object(defaults)) = (user, defaults) else {
        return;
    };
    for (key, value) in user {
        let key_path = join_path(path, key);
        if path.is_empty() && key == "models" {
            check_models(value, &key_path, problems);
            continue;
        }
        let Some(default) = defaults.get(key) else {
            problems.push(Problem {
                path: key_path,
                kind: ProblemKind::Unknown,
            });
            continue;
        };
        if let Some(expected) = kind_mismatch(value, default) {
            problems.push(Problem {
                path: key_path,
                kind: ProblemKind::WrongType(expected),
            });
        } else if value.is_object() {
            check_shape(value, default, &key_path, problems);
        }
    }
}

fn check_models(models: &Value, path: &str, problems: &mut Vec<Problem>) {
    let Value::Object(models) = models else {
        problems.push(Problem {
            path: path.into(),
            kind: ProblemKind::WrongType("an object of id -> { path, poolSize?, aliases? }"),
        });
        return;
    };
    for (id, model) in models {
        let model_path = join_path(path, id);
        let Value::Object(fields) = model else {
            problems.push(Problem {
                path: model_path,
                kind: ProblemKind::WrongType("an object { path, poolSize?, aliases? }"),
            });
            continue;
        };
        if !fields.get("path").is_some_and(Value::is_string) {
            problems.push(Problem {
                path: join_path(&model_path, "path"),
                kind: ProblemKind::WrongType("a string"),
            });
        }
        for (key, value) in fields {
            match key.as_str() {
                "path" => {}
                "poolSize" if value.as_u64().is_some_and(|n| n >= 1) => {}
                "poolSize" => problems.push(Problem {
                    path: join_path(&model_path, key),
                    kind: ProblemKind::WrongType("a whole number of at least 1"),
                }),
                "aliases" if is_list_of_strings(value) => {}
                "aliases" => problems.push(Problem {
                    path: join_path(&model_path, key),
                    kind: ProblemKind::WrongType("a list of strings"),
                }),
                _ => problems.push(Problem {
                    path: join_path(&model_path, key),
                    kind: ProblemKind::Unknown,
                }),
            }
        }
    }
}

/// What `value` should have been, if it is not of the same kind as `default`.
fn kind_mismatch(value: &Value, default: &Value) -> Option<&'static str> {
    match default {
        Value::Bool(_) if !value.is_boolean() => Some("true or false"),
        Value::String(_) if !value.is_string() => Some("a string"),
        Value::Number(n) if n.is_f64() && !value.is_number() => Some("a number"),
        Value::Number(n) if !n.is_f64() && value.as_u64().is_none() => {
            Some("a whole number of 0 or more")
        }
        Value::Array(_) if !is_list_of_strings(value) => Some("a list of strings"),
        Value::Object(_) if !value.is_object() => Some("an object"),
        _ => None,
    }
}

fn is_list_of_strings(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|a| a.iter().all(Value::is_string))
}

/// Drops the keys that `check_shape` warned about, so deserialization sees only known ones.
fn strip_unknown(user: Value, defaults: &Value) -> Value {
    let (Value::Object(user), Value::Object(defaults)) = (user, defaults) else {
        return Value::Null;
    };
    let kept = user
        .into_iter()
        .filter_map(|(key, value)| {
            if key == "models" {
                return Some((key, strip_unknown_models(value)));
            }
            let default = defaults.get(&key)?;
            let value = if default.is_object() {
                strip_unknown(value, default)
            } else {
                value
            };
            Some((key, value))
        })
        .collect();
    Value::Object(kept)
}

fn strip_unknown_models(models: Value) -> Value {
    let Value::Object(models) = models else {
        return models;
    };
    let kept = models
        .into_iter()
        .map(|(id, model)| {
            let model = match model {
                Value::Object(fields) => Value::Object(
                    fields
                        .into_iter()
                        .filter(|(k, _)| matches!(k.as_str(), "path" | "poolSize" | "aliases"))
                        .collect(),
                ),
                other => other,
            };
            (id, model)
        })
        .collect();
    Value::Object(kept)
}

/// Best-effort 1-based line of a dotted key in the JSON5 text: each segment is searched for
/// after the line of its parent, written bare, in double or in single quotes.
fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    for segment in dotted.split('.') {
        let forms = [
            format!("{segment}:"),
            format!("\"{segment}\""),
            format!("'{segment}'"),
        ];
        let found = (from..lines.len()).find(|&i| {
            let line = lines[i];
            forms.iter().any(|form| {
                line.match_indices(form.as_str()).any(|(at, _)| {
                    let before = line[..at].chars().next_back();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                })
            })
        })?;
        from = found;
    }
    Some(from + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn parse(text: &str) -> Result<(Settings, Vec<String>), SettingsError> {
        let mut warnings = Vec::new();
        parse_file(text, Path::new("/etc/s.json5"), &mut warnings).map(|s| (s, warnings))
    }

    #[test]
    fn default_file_parses_back_to_the_defaults() {
        let (settings, warnings) = parse(&default_file_text()).unwrap();
        assert_eq!(settings, Settings::default());
        assert!(warnings.is_empty());
    }

    #[test]
    fn json5_comments_and_partial_sections_keep_other_defaults() {
        let (settings, _) = parse("{ // comment\n workers: { poolSize: 2, },\n}").unwrap();
        assert_eq!(settings.workers.pool_size, 2);
        assert_eq!(settings.workers.rotate_threshold, 25);
        assert_eq!(settings.server.port, 3141);
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        let err = parse("{\n  server: {\n    host: \"127.0.0.1\",\n    port: \"eighty\",\n  },\n}")
            .unwrap_err();
        assert_eq!(err.line, Some(4));
        assert_eq!(err.key.as_deref(), Some("server.port"));
        assert_eq!(
            err.to_string(),
            "/etc/s.json5:4: server.port: expected a whole number of 0 or more"
        );
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = parse("{\n  server: {\n    port: 80,,\n  }\n}").unwrap_err();
        assert_eq!(err.line, Some(3));
    }

    #[test]
    fn unknown_keys_warn_and_are_ignored() {
        let (settings, warnings) =
            parse("{\n server: { port: 81, colour: 'blue' },\n extra: 1 }").unwrap();
        assert_eq!(settings.server.port, 81);
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(":2: unknown key `server.colour`")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(":3: unknown key `extra`")),
            "{warnings:?}"
        );
    }

    #[test]
    fn models_entries_are_checked() {
        let (settings, _) =
            parse("{ models: { base: { path: 'm/base.bin', poolSize: 2 } } }").unwrap();
        assert_eq!(settings.models["base"].pool_size, Some(2));
        let err = parse("{ models: { base: { path: 3 } } }").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("models.base.path"));
    }

    #[test]
    fn decoder_numbers_may_be_fractions_or_negative() {
        let (settings, _) = parse(
            "{ whisperServer: { logprobThreshold: -0.5, noSpeechThreshold: 0.3, beamSize: 5 } }",
        )
        .unwrap();
        let ws = settings.whisper_server;
        assert_eq!(
            (ws.logprob_threshold, ws.no_speech_threshold, ws.beam_size),
            (-0.5, 0.3, 5)
        );
        let err = parse("{ whisperServer: { beamSize: 2.5 } }").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("whisperServer.beamSize"));
        let err = parse("{ whisperServer: { entropyThreshold: 'high' } }").unwrap_err();
        assert_eq!(err.message, "expected a number");
    }

    #[test]
    fn model_aliases_are_a_list_of_strings() {
        let (settings, _) =
            parse("{ models: { base: { path: 'b.bin', aliases: ['whisper-1'] } } }").unwrap();
        assert_eq!(settings.models["base"].aliases, ["whisper-1"]);
        let err =
            parse("{ models: { base: { path: 'b.bin', aliases: 'whisper-1' } } }").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("models.base.aliases"));
    }

    #[test]
    fn port_out_of_range_is_a_settings_error() {
        assert!(parse("{ server: { port: 70000 } }").is_err());
    }
}
