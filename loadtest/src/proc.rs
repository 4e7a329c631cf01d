//! CPU time and resident memory of a process, from Linux procfs (proc(5)): `utime + stime`
//! (fields 14 and 15 of `/proc/PID/stat`, in clock ticks) and `VmRSS` of `/proc/PID/status`.
//!
//! Clock ticks are USER_HZ, which Linux fixes at 100 on every architecture it exports to user
//! space (`sysconf(_SC_CLK_TCK)`), so we need no libc call for it.

use anyhow::{anyhow, Context, Result};
use std::time::Instant;

const USER_HZ: f64 = 100.0;

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    /// utime + stime, seconds.
    pub cpu_secs: f64,
    pub rss_kib: u64,
}

pub struct Sampler {
    dir: String,
}

impl Sampler {
    pub fn new(pid: u32) -> Self {
        Self { dir: format!("/proc/{pid}") }
    }

    pub fn new_self() -> Self {
        Self { dir: "/proc/self".into() }
    }

    pub fn sample(&self) -> Result<Sample> {
        let at = Instant::now();
        let stat = std::fs::read_to_string(format!("{}/stat", self.dir))
            .with_context(|| format!("reading {}/stat (did the process exit?)", self.dir))?;
        // The command name (field 2) is in parentheses and may contain spaces: split after ')'.
        let rest = stat.rsplit_once(')').ok_or_else(|| anyhow!("{}/stat: no ')'", self.dir))?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state), so field k is f[k - 3].
        let ticks = |k: usize| -> Result<u64> {
            f.get(k - 3)
                .ok_or_else(|| anyhow!("{}/stat: no field {k}", self.dir))?
                .parse()
                .context("stat field")
        };
        let cpu_secs = (ticks(14)? + ticks(15)?) as f64 / USER_HZ;
        let status = std::fs::read_to_string(format!("{}/status", self.dir))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("{}/status: no VmRSS", self.dir))?;
        Ok(Sample { at, cpu_secs, rss_kib })
    }
}

/// CPU use between two samples, as percent of one core.
pub fn cpu_percent(a: &Sample, b: &Sample) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (b.cpu_secs - a.cpu_secs) / wall * 100.0
}
