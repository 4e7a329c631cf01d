//! `[webrtc]`: WHIP ingest and WHEP play (one UDP port and one ICE-TCP port for every peer).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{duration_str, Size};

/// A STUN or TURN server handed to WHIP/WHEP clients in `Link: <...>; rel="ice-server"`
/// headers (RFC 9725 §4.6). The server itself is ICE-lite and needs none.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:...`.
    pub url: String,
    /// TURN user name (empty for STUN).
    #[serde(default)]
    pub username: String,
    /// TURN password. A secret: handed only to clients that are allowed to publish or play.
    #[serde(default)]
    pub credential: String,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("credential", &if self.credential.is_empty() { "" } else { "<redacted>" })
            .finish()
    }
}

/// `[webrtc]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// WHIP and WHEP on (`/whip/<channel>`, `/whep/<channel>`).
    pub enabled: bool,
    /// The IP the media sockets bind (`0.0.0.0`: every interface).
    pub listen_ip: String,
    /// The UDP port all WebRTC media shares; 0 picks a free one (tests).
    pub udp_port: u16,
    /// The ICE-TCP port (RFC 6544, passive candidates), the fallback for viewers whose network
    /// blocks UDP; 0 picks a free one, and `tcp_enabled = false` turns it off.
    pub tcp_port: u16,
    pub tcp_enabled: bool,
    /// ICE-TCP connections one address (an IPv6 /64) may hold at once, connected or not; 0: no
    /// limit. Refusals count in `tidecast_connections_rejected_total{protocol="webrtc"}`.
    pub tcp_max_connections_per_address: usize,
    /// Addresses to advertise in ICE candidates instead of the local ones: the public IPs of a
    /// 1:1 NAT (a cloud VM's elastic IP). Empty: the local addresses gathered below.
    pub advertise_ips: Vec<String>,
    /// Gather local addresses only from these interfaces (`eth0`); empty: every interface that
    /// is up, loopback only when nothing else is (or `listen_ip` is a loopback address).
    pub interfaces: Vec<String>,
    /// Gather only these local IPs or networks (`10.0.0.0/8`); empty: all of the interfaces'.
    pub ips: Vec<String>,
    /// STUN/TURN servers for the clients (see [`IceServer`]).
    pub ice_servers: Vec<IceServer>,
    /// SDP offers larger than this are refused with 413.
    pub max_sdp_size: Size,
    /// WebRTC sessions (WHIP and WHEP) at once; past it, new ones get 503.
    pub max_sessions: usize,
    /// A session whose ICE and DTLS have not completed by then is removed.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// A connected session that receives nothing (media, RTCP, consent checks) for this long is
    /// removed (a peer that vanished without `DELETE`).
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// A WHIP publisher whose newest key frame is older than this is asked for one (RTCP PLI):
    /// browsers send key frames only when asked, and LL-HLS cuts segments at key frames, so
    /// keep it at about `hls.segment_target`.
    #[serde(with = "duration_str")]
    pub keyframe_request_interval: Duration,
    /// Kernel receive and send buffer of the shared UDP port (every session's STUN, DTLS, RTCP
    /// in; every viewer's RTP out).
    pub udp_buffer: Size,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen_ip: "0.0.0.0".to_owned(),
            udp_port: 8189,
            tcp_port: 8189,
            tcp_enabled: true,
            tcp_max_connections_per_address: 100,
            advertise_ips: Vec::new(),
            interfaces: Vec::new(),
            ips: Vec::new(),
            ice_servers: Vec::new(),
            max_sdp_size: Size::kib(32),
            max_sessions: 1000,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            keyframe_request_interval: Duration::from_secs(2),
            udp_buffer: Size::mib(8),
        }
    }
}

impl WebRtcConfig {
    /// Report every problem of `[webrtc]`.
    pub(super) fn validate(&self, check: &mut impl FnMut(bool, String)) {
        check(
            self.listen_ip.parse::<std::net::IpAddr>().is_ok(),
            format!("webrtc.listen_ip: {:?} is not an IP address", self.listen_ip),
        );
        for ip in &self.advertise_ips {
            check(
                ip.parse::<std::net::IpAddr>().is_ok(),
                format!("webrtc.advertise_ips: {ip:?} is not an IP address"),
            );
        }
        for ip in &self.ips {
            check(
                crate::admission::parse_network(ip).is_ok(),
                format!("webrtc.ips: {ip:?} is not an IP address or network"),
            );
        }
        for s in &self.ice_servers {
            check(
                ["stun:", "stuns:", "turn:", "turns:"].iter().any(|p| s.url.starts_with(p)),
                format!("webrtc.ice_servers: {:?} must be a stun:, stuns:, turn: or turns: URL", s.url),
            );
        }
        check(
            (Size::kib(1)..=Size::mib(1)).contains(&self.max_sdp_size),
            format!("webrtc.max_sdp_size: {} must be between 1KiB and 1MiB", self.max_sdp_size),
        );
        check(
            (Size::kib(64)..=Size::mib(256)).contains(&self.udp_buffer),
            format!("webrtc.udp_buffer: {} must be between 64KiB and 256MiB", self.udp_buffer),
        );
        check(self.max_sessions > 0, "webrtc.max_sessions: must be greater than 0".to_owned());
        for (key, d) in [
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
            ("keyframe_request_interval", self.keyframe_request_interval),
        ] {
            check(!d.is_zero(), format!("webrtc.{key}: must be greater than 0"));
        }
    }
}
