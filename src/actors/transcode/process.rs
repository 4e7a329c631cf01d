//! One ffmpeg process of a ladder: spawned through ffmpeg-sidecar without a shell, its input a
//! pipe on stdin, each output a pipe of its own (fds 3, 4, ...: `command-fds` maps them into the
//! child, so our crate needs no `unsafe`), stdout closed.
//!
//! Nothing here runs on an actix arbiter: stdin and the outputs are non-blocking pipes driven by
//! tokio on the media runtime; stderr is read by a thread of its own that parses ffmpeg's
//! progress and errors (ffmpeg-sidecar's log parser) into metrics and logs, and reaps the
//! process when stderr ends. Dropping an [`Ffmpeg`] kills the process if it still runs; so does
//! the death of the server, since ffmpeg then reads end-of-file on stdin and exits.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use command_fds::{CommandFdExt, FdMapping};
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel};
use ffmpeg_sidecar::log_parser::FfmpegLogParser;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::command::FIRST_OUTPUT_FD;
use crate::metrics::metrics;

/// Error lines of one ffmpeg logged at most (the rest are counted in the exit report).
const MAX_ERROR_LINES: u32 = 5;

/// How an ffmpeg process ended.
#[derive(Debug)]
pub struct Exit {
    /// `exit status: 1`, `signal: 9 (SIGKILL)`, ...
    pub status: String,
    /// ffmpeg's last error line, if it printed one.
    pub last_error: Option<String>,
}

/// A running ffmpeg.
pub struct Ffmpeg {
    child: Arc<Mutex<ffmpeg_sidecar::child::FfmpegChild>>,
    pub pid: u32,
    pub stdin: Option<pipe::Sender>,
    pub outputs: Vec<pipe::Receiver>,
    pub exited: oneshot::Receiver<Exit>,
}

impl Ffmpeg {
    /// Start `ffmpeg` with `args` and `outputs` output pipes. `channel` and `rung_class` label
    /// its logs and speed metric.
    pub fn spawn(
        ffmpeg: &Path,
        args: &[String],
        outputs: usize,
        channel: &str,
        rung_class: &'static str,
    ) -> io::Result<Self> {
        let mut cmd = FfmpegCommand::new_with_path(ffmpeg);
        cmd.args(args);
        let mut readers = Vec::with_capacity(outputs);
        let mut mappings = Vec::with_capacity(outputs);
        for i in 0..outputs {
            let (r, w) = io::pipe()?;
            readers.push(r);
            mappings.push(FdMapping { parent_fd: OwnedFd::from(w), child_fd: FIRST_OUTPUT_FD + i as i32 });
        }
        // (ffmpeg-sidecar wants all three stdio pipes; stdout is closed right after the spawn.)
        cmd.as_inner_mut()
            .fd_mappings(mappings)
            .map_err(|e| io::Error::other(format!("output pipes: {e}")))?;
        let mut child = cmd.spawn()?;
        // The write ends live in `cmd` (moved into the child): dropping it closes ours, so an
        // output reads end-of-file when ffmpeg closes it.
        drop(cmd);
        let pid = child.as_inner().id();
        drop(child.take_stdout());
        let stdin = child.take_stdin().map(|s| pipe::Sender::from_owned_fd(OwnedFd::from(s))).transpose()?;
        let outputs = readers
            .into_iter()
            .map(|r| pipe::Receiver::from_owned_fd(OwnedFd::from(r)))
            .collect::<io::Result<Vec<_>>>()?;
        let stderr = child.take_stderr().ok_or_else(|| io::Error::other("ffmpeg has no stderr pipe"))?;
        let child = Arc::new(Mutex::new(child));
        let (tx, exited) = oneshot::channel();
        let reaper = child.clone();
        let channel = channel.to_string();
        std::thread::Builder::new().name("ffmpeg-log".into()).spawn(move || {
            let last_error = read_log(stderr, &channel, rung_class);
            let status = match reaper.lock().unwrap_or_else(|p| p.into_inner()).as_inner_mut().wait() {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = tx.send(Exit { status, last_error });
        })?;
        Ok(Ffmpeg { child, pid, stdin, outputs, exited })
    }

    /// Kill the process now (SIGKILL); the log thread reaps it.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(None) = child.as_inner_mut().try_wait() {
            let _ = child.kill();
        }
    }
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parse ffmpeg's stderr until it closes: progress into the speed and dropped-frames metrics,
/// the first few error lines into the log. Returns the last error line.
fn read_log(stderr: std::process::ChildStderr, channel: &str, rung_class: &'static str) -> Option<String> {
    let m = metrics();
    let speed = m.transcode_speed.with_label_values(&[rung_class]);
    let mut parser = FfmpegLogParser::new(stderr);
    let mut dropped_seen = 0u64;
    let mut errors = 0u32;
    let mut last_error = None;
    loop {
        match parser.parse_next_event() {
            Ok(FfmpegEvent::LogEOF) | Err(_) => break,
            Ok(FfmpegEvent::Progress(p)) => {
                if p.speed > 0.0 {
                    speed.observe(f64::from(p.speed));
                }
                // ffmpeg-sidecar does not parse `drop=`; it is cumulative per process.
                if let Some(d) = field(&p.raw_log_message, "drop=").and_then(|v| v.parse::<u64>().ok()) {
                    m.transcode_frames_dropped.inc_by(d.saturating_sub(dropped_seen));
                    dropped_seen = dropped_seen.max(d);
                }
            }
            Ok(FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, line)) => {
                errors += 1;
                if errors <= MAX_ERROR_LINES {
                    warn!(%channel, ffmpeg = %line, "transcoder error");
                }
                last_error = Some(line);
            }
            Ok(FfmpegEvent::Log(LogLevel::Warning, line)) => {
                debug!(%channel, ffmpeg = %line, "transcoder warning")
            }
            Ok(other) => tracing::trace!(%channel, event = ?other, "transcoder log"),
        }
    }
    last_error
}

/// The value after `key` in an ffmpeg stats line (`... drop=3 speed=1.01x`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    line[at..].split_whitespace().next()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stats_fields_are_read_after_their_key() {
        let line = "[info] frame=  137 fps=30 q=22.0 size=     912kB time=00:00:04.37 bitrate=1709.5kbits/s dup=0 drop=3 speed=1.01x";
        assert_eq!(super::field(line, "drop="), Some("3"));
        assert_eq!(super::field(line, "nope="), None);
    }
}
