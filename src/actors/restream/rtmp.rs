//! RTMP and RTMPS push: TCP (and TLS for `rtmps://`, rustls with the web PKI roots plus
//! `[restream] ca_file`) to the destination, `protocols::rtmp::client` for the protocol, and
//! the ring cursor for the media.
//!
//! The socket is read while pushing too: the server's acknowledgements and pings must be
//! consumed (rml_rtmp answers them), and a read of 0 bytes is how a dropped destination shows
//! up before a write fails.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::info;

use super::{Destination, PushEnd, PushFailure, PushState, RestreamSettings, StatusCell};
use crate::media::frame::Frame;
use crate::media::ring::FrameRing;
use crate::metrics::metrics;
use crate::protocols::rtmp::client::{PushError, RtmpPushClient};

/// Frames taken from the ring per write.
const WRITE_BATCH: usize = 64;

/// One connection attempt; returns when the session ends or the push fails.
pub(super) async fn push(
    d: &Destination,
    ring: &FrameRing,
    settings: &RestreamSettings,
    cell: &StatusCell,
) -> Result<PushEnd, PushFailure> {
    let addr = d.url.authority();
    let tcp = timeout(settings.connect_timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| PushFailure::new(format!("connecting to {addr} timed out")))?
        .map_err(|e| PushFailure::new(format!("connecting to {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    if d.url.protocol == super::PushProtocol::Rtmps {
        let tls = tls_connector(settings);
        let name = ServerName::try_from(d.url.host.clone())
            .map_err(|e| PushFailure::new(format!("invalid TLS server name {}: {e}", d.url.host)))?;
        let stream = timeout(settings.connect_timeout, tls.connect(name, tcp))
            .await
            .map_err(|_| PushFailure::new(format!("TLS handshake with {addr} timed out")))?
            .map_err(|e| PushFailure::new(format!("TLS handshake with {addr}: {e}")))?;
        run(stream, d, ring, settings, cell).await
    } else {
        run(tcp, d, ring, settings, cell).await
    }
}

fn tls_connector(settings: &RestreamSettings) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for cert in &settings.extra_roots {
        // Validated when the config was loaded; a certificate rustls cannot use is skipped.
        let _ = roots.add(cert.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn protocol_failure(e: PushError) -> PushFailure {
    let refused = matches!(e, PushError::ConnectRejected { .. } | PushError::PublishRefused { .. });
    PushFailure { message: e.to_string(), refused, was_live: false }
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    d: &Destination,
    ring: &FrameRing,
    settings: &RestreamSettings,
    cell: &StatusCell,
) -> Result<PushEnd, PushFailure> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let tc_url = format!("{}://{}/{}", d.url.protocol.label(), d.url.authority(), d.url.app);
    let (mut client, first) =
        RtmpPushClient::new(tc_url, d.url.app.clone(), d.stream_key.clone()).map_err(protocol_failure)?;
    let io = |e: std::io::Error| PushFailure::new(format!("connection to {}: {e}", d.url));
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = first;
    // Connect and publish, bounded by the connect timeout.
    let opened = async {
        loop {
            if !out.is_empty() {
                wr.write_all(&out).await.map_err(io)?;
                out.clear();
            }
            if client.is_publishing() {
                return Ok(());
            }
            let n = rd.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                return Err(PushFailure::new(format!("{} closed the connection before publishing", d.url)));
            }
            client.handle_input(&buf[..n], &mut out).map_err(protocol_failure)?;
        }
    };
    timeout(settings.connect_timeout, opened)
        .await
        .map_err(|_| PushFailure::new(format!("{} did not accept publishing in time", d.url)))??;
    cell.set(PushState::Live);
    info!("push live");
    let live = |mut f: PushFailure| {
        f.was_live = true;
        f
    };
    // A fresh cursor starts at the newest key frame.
    let mut reader = ring.reader();
    let unwritable = metrics().frames_unwritable.with_label_values(&[d.url.protocol.label()]);
    let mut batch: Vec<Arc<Frame>> = Vec::new();
    loop {
        tokio::select! {
            open = reader.wait() => {
                if !open {
                    return Ok(PushEnd::SessionEnded);
                }
            }
            n = rd.read(&mut buf) => {
                let n = n.map_err(io).map_err(live)?;
                if n == 0 {
                    return Err(live(PushFailure::new(format!("{} closed the connection", d.url))));
                }
                client.handle_input(&buf[..n], &mut out).map_err(protocol_failure).map_err(live)?;
            }
        }
        batch.clear();
        match reader.read_batch_within(&mut batch, WRITE_BATCH, settings.max_lag) {
            Ok(_) => {}
            Err(_lag) => {
                // Behind by more than max_lag: drop to the newest key frame (rule 3).
                reader.skip_to_newest_sync();
                reader.read_batch(&mut batch, WRITE_BATCH);
            }
        }
        for f in &batch {
            if !client.send_frame(f, &mut out).map_err(protocol_failure).map_err(live)? {
                unwritable.inc();
            }
        }
        if !out.is_empty() {
            let n = out.len() as u64;
            timeout(settings.write_timeout, wr.write_all(&out))
                .await
                .map_err(|_| live(PushFailure::new(format!("writing to {} timed out", d.url))))?
                .map_err(io)
                .map_err(live)?;
            out.clear();
            cell.wrote(n);
        }
    }
}
