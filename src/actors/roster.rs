//! The channel roster: who publishes and who plays each channel on this server right now, for
//! `GET /api/v1/channels/{name}/sessions` (the channel's owner sees its publisher and viewers).
//!
//! Every protocol is in it without a line of its own, because the protocol-neutral sessions
//! enter it: `IngestSession` (RTMP, RTMPS, SRT, WHIP, RTSP pull) and `ViewerSession` (RTMP, SRT
//! and WHEP play) each hold a [`Listed`] for their lifetime. LL-HLS has no sessions (a viewer
//! is a client that reloads playlists, see `hls::HlsViewers`): the channel's LL-HLS sweep
//! reports a count instead. One process-wide table, like the metrics: sessions on other nodes
//! are theirs to list.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::SystemTime;

use dashmap::DashMap;
use serde::Serialize;
use utoipa::ToSchema;

/// What a session does on its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Publisher,
    Viewer,
}

/// One session on a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct RosterEntry {
    /// This server's number for the session (unique while it runs).
    pub id: u64,
    pub role: Role,
    /// `rtmp`, `rtmps`, `srt`, `webrtc`, `rtsp`.
    #[schema(value_type = String)]
    pub protocol: &'static str,
    /// When the session started, unix milliseconds.
    pub started_at_ms: i64,
}

#[derive(Default)]
struct Table {
    /// Session id -> (channel, entry).
    sessions: DashMap<u64, (String, RosterEntry)>,
    /// LL-HLS viewers by channel, as the channel's last sweep counted them.
    hls: DashMap<String, i64>,
    next_id: AtomicU64,
}

static ROSTER: LazyLock<Table> = LazyLock::new(Table::default);

/// A session's place in the roster; dropping it takes the session out.
#[derive(Debug)]
pub struct Listed(u64);

impl Listed {
    pub fn new(channel: &str, role: Role, protocol: &'static str) -> Listed {
        let id = ROSTER.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let started_at_ms =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let entry = RosterEntry { id, role, protocol, started_at_ms };
        ROSTER.sessions.insert(id, (channel.to_owned(), entry));
        Listed(id)
    }

    /// The session's number in the roster (`RosterEntry::id`).
    pub fn id(&self) -> u64 {
        self.0
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        ROSTER.sessions.remove(&self.0);
    }
}

/// The LL-HLS viewers of `channel`'s live session (`None`: the session's LL-HLS is gone).
pub fn set_hls_viewers(channel: &str, viewers: Option<i64>) {
    match viewers {
        Some(n) => {
            ROSTER.hls.insert(channel.to_owned(), n);
        }
        None => {
            ROSTER.hls.remove(channel);
        }
    }
}

/// A channel's sessions on this server, oldest first, and its LL-HLS viewer count.
pub fn list(channel: &str) -> (Vec<RosterEntry>, i64) {
    let mut sessions: Vec<RosterEntry> =
        ROSTER.sessions.iter().filter(|e| e.value().0 == channel).map(|e| e.value().1.clone()).collect();
    sessions.sort_by_key(|e| (e.started_at_ms, e.id));
    let hls = ROSTER.hls.get(channel).map_or(0, |n| *n);
    (sessions, hls)
}

/// A channel's viewers on this server: sessions and LL-HLS clients.
pub fn viewer_count(channel: &str) -> i64 {
    let sessions =
        ROSTER.sessions.iter().filter(|e| e.value().0 == channel && e.value().1.role == Role::Viewer).count();
    sessions as i64 + ROSTER.hls.get(channel).map_or(0, |n| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_listed_while_they_run() {
        let channel = "roster-test";
        let publisher = Listed::new(channel, Role::Publisher, "webrtc");
        let viewer = Listed::new(channel, Role::Viewer, "rtmp");
        let _other = Listed::new("roster-other", Role::Viewer, "srt");
        set_hls_viewers(channel, Some(3));
        let (sessions, hls) = list(channel);
        assert_eq!(hls, 3);
        assert_eq!(viewer_count(channel), 4);
        let seen: Vec<(Role, &str)> = sessions.iter().map(|e| (e.role, e.protocol)).collect();
        assert_eq!(seen, vec![(Role::Publisher, "webrtc"), (Role::Viewer, "rtmp")]);
        drop(viewer);
        drop(publisher);
        set_hls_viewers(channel, None);
        assert_eq!(list(channel), (Vec::new(), 0));
    }
}
