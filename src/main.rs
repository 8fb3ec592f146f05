//! `inference-server-manager`: parses the command line, runs the command, maps the outcome
//! to an exit code (0 ok, 1 runtime failure, 2 bad usage or invalid settings).

use std::process::ExitCode;

use inference_server_manager::app::{self, Error};
use inference_server_manager::audio::ffmpeg::Ffmpeg;
use inference_server_manager::cli::{self, Command};
use inference_server_manager::settings::{self, Overrides, Paths, Settings, SettingsError};
use inference_server_manager::{logging, pool};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = match cli::parse(&args) {
        Ok(cli) => cli,
        Err(message) => {
            eprintln!("error: {message}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    logging::init(std::env::var("LOG_LEVEL").ok().as_deref());
    let outcome = run(&cli);
    logging::flush();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: &cli::Cli) -> Result<(), Error> {
    let paths = Paths::resolve(cli.config.as_deref())?;
    let overrides = Overrides {
        host: cli.host.clone(),
        port: cli.port,
    };
    match cli.command {
        Command::Help => print!("{}", cli::USAGE),
        Command::Version => println!("inference-server-manager {}", env!("CARGO_PKG_VERSION")),
        Command::ConfigPath => println!("{}", paths.config_file.display()),
        Command::ConfigShow => println!(
            "{}",
            settings::redacted_json(&load(&paths, &overrides, false)?)
        ),
        Command::ConfigInit => config_init(&paths)?,
        Command::ConfigEdit => config_edit(&paths)?,
        Command::Check => check(&paths, &overrides)?,
        Command::Serve => {
            let settings = load(&paths, &overrides, true)?;
            app::serve(settings, &paths, cli.mode)?;
        }
    }
    Ok(())
}

/// Loads the settings and logs the unknown-key warnings.
fn load(paths: &Paths, overrides: &Overrides, create: bool) -> Result<Settings, SettingsError> {
    let (settings, warnings) = settings::load(paths, overrides, create)?;
    for warning in warnings {
        log::warn!("{warning}");
    }
    Ok(settings)
}

fn config_init(paths: &Paths) -> Result<(), Error> {
    if paths.config_file.exists() {
        println!(
            "{} already exists; left as it is",
            paths.config_file.display()
        );
    } else {
        settings::write_defaults(&paths.config_file)?;
        println!(
            "wrote the default settings to {}",
            paths.config_file.display()
        );
    }
    Ok(())
}

/// Opens the settings file in `editor` from the settings (when the file parses and that
/// editor is installed), else `$EDITOR`, else `vi`.
fn config_edit(paths: &Paths) -> Result<(), Error> {
    if !paths.config_file.exists() {
        settings::write_defaults(&paths.config_file)?;
    }
    let configured = settings::load(paths, &Overrides::default(), false)
        .ok()
        .map(|(s, _)| s.editor);
    let editor = configured
        .into_iter()
        .chain(std::env::var("EDITOR").ok())
        .filter(|e| !e.trim().is_empty())
        .find(|e| {
            e.split_whitespace()
                .next()
                .is_some_and(|p| pool::process::resolve_program(p, None).is_ok())
        })
        .unwrap_or_else(|| "vi".to_string());
    let mut words = editor.split_whitespace();
    let program = words.next().unwrap_or("vi");
    let status = std::process::Command::new(program)
        .args(words)
        .arg(&paths.config_file)
        .status()
        .map_err(|e| Error::Editor {
            program: program.to_string(),
            why: format!("could not be run: {e}"),
        })?;
    if !status.success() {
        return Err(Error::Editor {
            program: program.to_string(),
            why: format!("exited with {status}"),
        });
    }
    Ok(())
}

/// Validates the settings and the worker command without starting anything.
fn check(paths: &Paths, overrides: &Overrides) -> Result<(), Error> {
    let settings = load(paths, overrides, false)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = app::plan_workers(&settings, paths, cores)?;
    for warning in &plan.warnings {
        log::warn!("{warning}");
    }
    println!(
        "settings: {} ({})",
        paths.config_file.display(),
        if paths.config_file.exists() {
            "found"
        } else {
            "not found; defaults"
        }
    );
    println!(
        "worker:   {} {}",
        plan.command.program.display(),
        plan.command
            .argv(settings.workers.starting_port, plan.model_path.as_deref())
            .join(" ")
    );
    println!(
        "pool:     {} worker(s) of model `{}`",
        plan.models[&plan.model].pool_size, plan.model
    );
    println!(
        "listen:   {}:{}",
        settings.server.host, settings.server.port
    );
    let audio = &settings.audio;
    match Ffmpeg::find(&audio.ffmpeg, audio.max_conversions, audio.conversion_timeout()) {
        Ok(Some(ffmpeg)) => println!(
            "audio:    any format ffmpeg decodes ({}, {})",
            ffmpeg.program().display(),
            ffmpeg.version()
        ),
        Ok(None) => println!("audio:    conversion off (audio.ffmpeg is \"\"): WAV, MP3, FLAC and Ogg Vorbis only"),
        Err(e) => println!("audio:    conversion unavailable (audio.ffmpeg: {e}): WAV, MP3, FLAC and Ogg Vorbis only; install ffmpeg"),
    }
    println!("ok");
    Ok(())
}
