//! Helper programs a test starts besides the manager (haproxy, nginx, a whisper-server called
//! directly), stopped when the test ends however it ends.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{signal, wait_for};

/// A child process stopped on drop: SIGTERM first when it is [`Spawned::graceful`] (nginx's
/// master then stops its own workers), SIGKILL otherwise or when SIGTERM is not enough.
pub struct Spawned {
    child: Child,
    graceful: bool,
}

/// nginx in the foreground with `dir` as its prefix and `dir/nginx.conf` as its configuration,
/// stopped with SIGTERM (its master then stops its worker processes too).
pub fn nginx(dir: &std::path::Path) -> Spawned {
    Spawned::start(
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"]),
    )
    .graceful()
}

impl Spawned {
    /// Starts `command` with its output discarded; panics naming the program if it cannot.
    pub fn start(command: &mut Command) -> Spawned {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()));
        Spawned {
            child,
            graceful: false,
        }
    }

    /// Takes charge of a child started elsewhere (with its output set up as the test needs),
    /// stopped gracefully on drop.
    pub fn adopt(child: Child) -> Spawned {
        Spawned {
            child,
            graceful: true,
        }
    }

    /// Stops it with SIGTERM on drop (SIGKILL after 10 s).
    pub fn graceful(mut self) -> Spawned {
        self.graceful = true;
        self
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.graceful {
            signal(self.child.id(), "TERM");
            let limit = Duration::from_secs(10);
            if wait_for(limit, || self.child.try_wait().ok().flatten()).is_some() {
                return;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real whisper-server of the build in `dir` (`needs::real_whisper`) with its tiny.en
/// model and `threads` threads, started straight (no manager) on a free port; ready when this
/// returns, killed on drop. Returns it and its port.
pub fn direct_whisper_server(dir: &std::path::Path, threads: usize) -> (Spawned, u16) {
    let port = super::free_port_base();
    let worker = Spawned::start(
        Command::new(dir.join("whisper-server"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--threads",
            ])
            .arg(threads.to_string())
            .arg("-m")
            .arg(dir.join("ggml-tiny.en.bin"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    assert!(
        super::wait_ok(&format!("http://127.0.0.1:{port}/health")),
        "the direct whisper-server never became ready"
    );
    (worker, port)
}

/// Runs the Python client `tests/clients/<script>` with `args` to its end: its standard output
/// when it exits 0, else both of its outputs, to fail the test with.
pub fn run_client<I, S>(script: &str, args: I) -> Result<String, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let output = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{script} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
