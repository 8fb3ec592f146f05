//! The command line (README "Command line"), parsed by hand: it is small, and a parser crate would
//! be the largest dependency of the binary.

use std::path::PathBuf;

pub const USAGE: &str = "\
inference-server-manager: a supervised pool of whisper.cpp whisper-server workers behind one HTTP API

USAGE:
    inference-server-manager [serve] [--config PATH] [--port N] [--host ADDR] [--mode http|rack]
    inference-server-manager config path|show|init|edit [--config PATH]
    inference-server-manager check [--config PATH]
    inference-server-manager --help | --version

COMMANDS:
    serve          run the service (the default)
    config path    print where the settings file is
    config show    print the effective settings (file + environment + flags) as JSON
    config init    write the default settings file if there is none
    config edit    open the settings file in `editor`, else $EDITOR, else vi
    check          validate the settings and the worker command, then exit

OPTIONS:
    --config PATH  settings file (default: $XDG_CONFIG_HOME/$XDG_DIR_NAME/settings.json5)
    --port N       HTTP port (overrides INFERENCE_SERVER_PORT and server.port)
    --host ADDR    address to listen on (overrides INFERENCE_SERVER_HOST and server.host)
    --mode MODE    `http` (default), or `rack`: also JSON-RPC on TCP rack.port, and
                   registration with rack.orchestratorUrl when it is set

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid settings.
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    ConfigPath,
    ConfigShow,
    ConfigInit,
    ConfigEdit,
    Check,
    Help,
    Version,
}

/// How `serve` is reached: HTTP only, or HTTP plus JSON-RPC on TCP `rack.port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Http,
    Rack,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub command: Command,
    pub mode: Mode,
    pub config: Option<PathBuf>,
    pub port: Option<u16>,
    pub host: Option<String>,
}

/// Parses the arguments after the program name. The error is a one-line usage message.
pub fn parse(args: &[String]) -> Result<Cli, String> {
    let mut words = Vec::new();
    let mut cli = Cli {
        command: Command::Serve,
        mode: Mode::Http,
        config: None,
        port: None,
        host: None,
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| iter.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "-h" | "--help" => {
                return Ok(Cli {
                    command: Command::Help,
                    ..cli
                })
            }
            "-V" | "--version" => {
                return Ok(Cli {
                    command: Command::Version,
                    ..cli
                })
            }
            "--config" => cli.config = Some(PathBuf::from(value("--config")?)),
            "--host" => cli.host = Some(value("--host")?),
            "--port" => {
                let raw = value("--port")?;
                cli.port = Some(
                    raw.parse()
                        .map_err(|_| format!("--port: `{raw}` is not a port number (0-65535)"))?,
                );
            }
            "--mode" => match value("--mode")?.as_str() {
                "http" => cli.mode = Mode::Http,
                "rack" => cli.mode = Mode::Rack,
                other => return Err(format!("--mode: `{other}` is not one of http|rack")),
            },
            f if f.starts_with('-') => return Err(format!("unknown option `{f}`")),
            word => words.push(word.to_string()),
        }
    }
    cli.command = match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => Command::Serve,
        ["check"] => Command::Check,
        ["config", "path"] => Command::ConfigPath,
        ["config", "show"] => Command::ConfigShow,
        ["config", "init"] => Command::ConfigInit,
        ["config", "edit"] => Command::ConfigEdit,
        ["config"] => return Err("config needs one of: path, show, init, edit".into()),
        other => return Err(format!("unknown command `{}`", other.join(" "))),
    };
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Cli, String> {
        parse(
            &line
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn serve_is_the_default_and_flags_go_anywhere() {
        let cli = parse_str("--port 8080 serve --host=127.0.0.1").unwrap();
        assert_eq!(cli.command, Command::Serve);
        assert_eq!(cli.port, Some(8080));
        assert_eq!(cli.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(parse_str("").unwrap().command, Command::Serve);
    }

    #[test]
    fn config_subcommands() {
        assert_eq!(
            parse_str("config show --config /x.json5").unwrap().command,
            Command::ConfigShow
        );
        assert_eq!(
            parse_str("config edit").unwrap().command,
            Command::ConfigEdit
        );
        assert!(parse_str("config").is_err());
        assert!(parse_str("config frob").is_err());
    }

    #[test]
    fn bad_usage_is_an_error() {
        assert!(parse_str("--port").is_err());
        assert!(parse_str("--port 99999").is_err());
        assert!(parse_str("--frobnicate").is_err());
        assert!(parse_str("--mode tcp").is_err());
        assert_eq!(parse_str("serve --mode rack").unwrap().mode, Mode::Rack);
        assert_eq!(parse_str("check --help").unwrap().command, Command::Help);
    }
}
