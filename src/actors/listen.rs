//! Listeners: one room per protocol that accepts connections and admits them.
//!
//! A listener owns accepting, admission control (a connection limit per listener, rejected
//! politely in the protocol's own terms: backpressure rule 6), the handshake and the
//! negotiation that tells a publisher from a viewer. It then hands the connection to the
//! protocol's adapter in `ingest/` (publish) or `viewer/` (play), which drives the shared
//! `IngestSession` or `ViewerSession`. Adding a protocol is a new file here, in `ingest/` and in
//! `viewer/`, not an edit across the house.

pub mod rtmp;
pub mod srt;
pub mod transport;

/// Ask for `bytes` of kernel receive and send buffer on a UDP socket that many connections share
/// (`key` names the setting, for the warning). Linux caps the request at
/// `net.core.rmem_max`/`wmem_max` and reports double what it granted.
pub fn size_udp_buffers(udp: &tokio::net::UdpSocket, bytes: usize, key: &str) {
    let sock = socket2::SockRef::from(udp);
    let _ = sock.set_recv_buffer_size(bytes);
    let _ = sock.set_send_buffer_size(bytes);
    let granted = sock.recv_buffer_size().unwrap_or(0);
    if granted < bytes {
        tracing::warn!(
            requested = bytes,
            granted,
            "a shared UDP socket's receive buffer is smaller than {key}: raise net.core.rmem_max \
             (sysctl) for many connections"
        );
    } else {
        tracing::debug!(granted, key, "UDP socket buffers");
    }
}
