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
