//! What `/proc` says of a process: open files, threads, resident memory. The attack tests
//! check with these that nothing leaked.

/// Open file descriptors of `pid`.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A field of `/proc/PID/status` (`Threads`, `VmRSS`, ...) as a number (kB for sizes).
pub fn status_field(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Threads of `pid`.
pub fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads")
}

/// Resident memory of `pid`, in kB.
pub fn rss_kb(pid: u32) -> u64 {
    status_field(pid, "VmRSS")
}

/// Open files, threads and resident kB at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub fds: usize,
    pub threads: u64,
    pub rss_kb: u64,
}

pub fn usage(pid: u32) -> Usage {
    Usage {
        fds: fds(pid),
        threads: threads(pid),
        rss_kb: rss_kb(pid),
    }
}
