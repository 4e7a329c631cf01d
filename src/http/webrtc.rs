//! WHIP (RFC 9725) and WHEP signalling: `POST /whip/<channel>` and `POST /whep/<channel>` take
//! an SDP offer and answer `201 Created` with the SDP answer, the session resource in
//! `Location`, its `ETag`, and the configured STUN/TURN servers in `Link: <...>;
//! rel="ice-server"`; `PATCH` on the resource takes trickled candidates; `DELETE` ends the
//! session. CORS comes from the app (`http::cors`), with `Location`, `Link` and `ETag` exposed
//! so a page on another origin can read them.
//!
//! Order of refusals, cheapest first and before anything is negotiated: WebRTC off (503), body
//! not `application/sdp` (415) or over `webrtc.max_sdp_size` (413), WHIP key missing or wrong
//! (401, counted with every ingest auth failure), no H.264 in the offer (406), channel taken
//! (409, unless in its reconnect grace), too many sessions (503); WHEP: the LL-HLS rule
//! (public, or a playback token as `Authorization: Bearer` or `?token=`), then the channel
//! must be live (404) and its video free of B-frames (406).

use actix::Addr;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, Instrument};

use super::error::{error_response, unsupported_media_type};
use super::AppState;
use crate::actors::ingest::IngestSession;
use crate::actors::registry::ChannelRegistry;
use crate::actors::viewer::{ViewerPolicy, ViewerSession};
use crate::actors::webrtc::{Peer, SessionEntry, SessionKind, WebRtc};
use crate::error::ErrorKind;
use crate::media::clock::Clock;
use crate::media::{AudioCodec, TrackKind};
use crate::protocols::rtmp::Secret;
use crate::protocols::webrtc::{check_offer, OfferError, Role};

/// The `protocol` label of WebRTC publishers and viewers in the shared metrics.
pub const PROTOCOL: &str = "webrtc";

/// What the WHIP/WHEP handlers need besides the app state.
#[derive(Clone)]
pub struct WebRtcService {
    pub rtc: WebRtc,
    pub registry: Addr<ChannelRegistry>,
    pub pulls: crate::actors::pull::Pulls,
    pub viewer: ViewerPolicy,
    pub clock: Clock,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/whip/{channel}", web::post().to(whip_post))
        .route("/whep/{channel}", web::post().to(whep_post))
        .route("/whip/{channel}/{session}", web::patch().to(patch))
        .route("/whip/{channel}/{session}", web::delete().to(delete))
        .route("/whep/{channel}/{session}", web::patch().to(patch))
        .route("/whep/{channel}/{session}", web::delete().to(delete));
}

fn service(state: &AppState) -> Result<&WebRtcService, Box<HttpResponse>> {
    state.webrtc.as_ref().ok_or_else(|| {
        Box::new(error_response(
            ErrorKind::Unavailable,
            "WebRTC is turned off on this server ([webrtc] enabled)",
        ))
    })
}

/// The offer, checked for type and size.
async fn read_offer(
    req: &HttpRequest,
    mut body: web::Payload,
    max: usize,
) -> Result<String, Box<HttpResponse>> {
    let sdp_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
    });
    if !sdp_type {
        return Err(Box::new(unsupported_media_type("application/sdp")));
    }
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| {
            Box::new(error_response(ErrorKind::InvalidArgument, "the request body could not be read"))
        })?;
        if buf.len() + chunk.len() > max {
            return Err(Box::new(offer_refused(&OfferError::TooLarge {
                size: buf.len() + chunk.len(),
                max,
            })));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf.to_vec())
        .map_err(|_| Box::new(offer_refused(&OfferError::Malformed("not UTF-8".into()))))
}

fn offer_refused(e: &OfferError) -> HttpResponse {
    let (status, code) = match e {
        OfferError::TooLarge { .. } => (actix_web::http::StatusCode::PAYLOAD_TOO_LARGE, "sdp_too_large"),
        OfferError::Malformed(_) => (actix_web::http::StatusCode::BAD_REQUEST, "invalid_sdp"),
        OfferError::Unsupported(_) => (actix_web::http::StatusCode::NOT_ACCEPTABLE, "unsupported_codecs"),
    };
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": e.to_string()}}))
}

/// A new session resource's id: 128 random bits, the capability `PATCH`/`DELETE` need.
fn resource_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A new session's resource: its id, the token `DELETE` cancels, and the guard that removes it.
fn register(
    svc: &WebRtcService,
    kind: SessionKind,
    channel: &str,
    ufrag: &str,
) -> (String, CancellationToken, crate::actors::webrtc::SessionGuard) {
    let id = resource_id();
    let cancel = CancellationToken::new();
    let entry =
        SessionEntry { kind, channel: channel.to_owned(), cancel: cancel.clone(), ufrag: ufrag.to_owned() };
    let guard = svc.rtc.register(id.clone(), entry);
    (id, cancel, guard)
}

/// 201 with the answer and RFC 9725's headers.
fn created(
    svc: &WebRtcService,
    kind: SessionKind,
    channel: &str,
    id: &str,
    ufrag: &str,
    answer: String,
) -> HttpResponse {
    let mut res = HttpResponse::Created();
    res.content_type("application/sdp")
        .insert_header((header::LOCATION, format!("/{}/{channel}/{id}", kind.label())))
        .insert_header((header::ETAG, format!("\"{ufrag}\"")))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    for s in &svc.rtc.config().ice_servers {
        let mut link = format!("<{}>; rel=\"ice-server\"", s.url);
        if !s.username.is_empty() {
            link.push_str(&format!(
                "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                s.username, s.credential
            ));
        }
        res.append_header((header::LINK, link));
    }
    res.body(answer)
}

async fn whip_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    channel: web::Path<String>,
    body: web::Payload,
) -> HttpResponse {
    let svc = match service(&state) {
        Ok(s) => s.clone(),
        Err(r) => return *r,
    };
    let channel = channel.into_inner();
    let offer = match read_offer(&req, body, svc.rtc.config().max_sdp_size.as_usize()).await {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let Ok(Some(key)) = super::api::bearer(&req) else {
        crate::metrics::metrics().auth_failures.with_label_values(&[PROTOCOL]).inc();
        return error_response(
            ErrorKind::Unauthenticated,
            "WHIP needs the channel's stream key as a Bearer token",
        );
    };
    let summary = match check_offer(&offer, usize::MAX, Role::Publish) {
        Ok(s) => s,
        Err(e) => return offer_refused(&e),
    };
    if let Err(e) = svc.rtc.check_room() {
        return actix_web::ResponseError::error_response(&e);
    }
    let ingest = match IngestSession::start_checked(
        &svc.registry,
        PROTOCOL,
        Secret(key),
        Some(&channel),
        svc.rtc.shutdown(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let negotiated = match svc.rtc.negotiate(offer, None) {
        Ok(n) => n,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    if summary.audio_ignored {
        info!(channel, "whip offer's audio is not Opus; it is ignored");
    }
    let (id, cancel, guard) = register(&svc, SessionKind::Whip, &channel, &negotiated.ufrag);
    let res = created(&svc, SessionKind::Whip, &channel, &id, &negotiated.ufrag, negotiated.answer);
    let peer = Peer::new(svc.rtc.clone(), negotiated.pc, negotiated.inbox);
    let span = info_span!("whip", channel = %channel, session = ingest.session_id());
    info!(parent: &span, resumed = ingest.resumed(), "whip publisher negotiated");
    svc.rtc.spawn(
        crate::actors::ingest::whip::run(svc.rtc.clone(), peer, guard, ingest, summary, cancel)
            .instrument(span),
    );
    res
}

async fn whep_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    channel: web::Path<String>,
    query: web::Query<std::collections::HashMap<String, String>>,
    body: web::Payload,
) -> HttpResponse {
    let svc = match service(&state) {
        Ok(s) => s.clone(),
        Err(r) => return *r,
    };
    let started = tokio::time::Instant::now();
    let channel = channel.into_inner();
    let offer = match read_offer(&req, body, svc.rtc.config().max_sdp_size.as_usize()).await {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let summary = match check_offer(&offer, usize::MAX, Role::Play) {
        Ok(s) => s,
        Err(e) => return offer_refused(&e),
    };
    // A header that is not a Bearer token is ignored, as LL-HLS ignores it: players send odd
    // ones, and a public channel plays without any.
    let token = super::api::bearer(&req).ok().flatten().or_else(|| query.get("token").cloned());
    let entitled = match state.api.authorize_play(&channel, token.as_deref(), None).await {
        Ok(e) => e,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    if let Err(e) = svc.rtc.check_room() {
        return actix_web::ResponseError::error_response(&e);
    }
    let (reader, demand) =
        match crate::actors::viewer::attach(&svc.registry, &svc.pulls, &channel, entitled).await {
            Ok(r) => r,
            Err(e) => return actix_web::ResponseError::error_response(&e),
        };
    // Look at what is buffered (a fork of the cursor, which starts on the newest key frame):
    // B-frames cannot be sent; AAC audio has no WebRTC form (Opus comes from the ladder).
    let (mut b_frames, mut audio) = (false, None);
    let buffered = {
        let mut peek = reader.fork();
        let mut frames = Vec::new();
        peek.read_batch(&mut frames, 256);
        for f in &frames {
            b_frames |= f.track == TrackKind::Video && f.pts != f.dts;
            audio = audio.or(f.tracks.audio.as_ref().map(|a| a.codec));
        }
        !frames.is_empty()
    };
    if b_frames {
        return HttpResponse::NotAcceptable().json(json!({"error": {
            "code": "b_frames",
            "message": "this channel's video has B-frames, which WebRTC cannot carry; publish without \
                        B-frames (x264 bframes=0, OBS's \"zerolatency\" tune) or play it over LL-HLS",
        }}));
    }
    // An AAC channel gets an audio track too: the ladder's Opus fills it once it runs. So does
    // a channel with nothing buffered yet (a WHIP publisher's first second, held for its sender
    // reports): the session sends what comes.
    let send_audio = summary.audio && (audio.is_some() || !buffered);
    let opus_from = (send_audio && audio != Some(AudioCodec::Opus))
        .then(|| crate::actors::viewer::whep::OpusFromLadder { registry: svc.registry.clone(), entitled });
    let audio_note = match audio {
        Some(AudioCodec::Aac) => Some("audio absent: the channel sends AAC, and WebRTC carries Opus; it is added when the transcode ladder makes Opus"),
        _ if audio.is_some() && !summary.audio => Some("audio absent: the offer has no Opus"),
        _ => None,
    };
    let negotiated = match svc.rtc.negotiate(offer, Some(send_audio)) {
        Ok(n) => n,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let (id, cancel, guard) = register(&svc, SessionKind::Whep, &channel, &negotiated.ufrag);
    let mut res = created(&svc, SessionKind::Whep, &channel, &id, &negotiated.ufrag, negotiated.answer);
    let session = ViewerSession::new(&channel, PROTOCOL, "whep_play", reader, svc.viewer, svc.clock, started);
    // The resource id is the capability DELETE and PATCH need: logs name the viewer by its
    // roster number instead.
    let span = info_span!("whep", channel = %channel, viewer = session.id());
    if let Some(note) = audio_note {
        info!(parent: &span, "{note}");
        if let Ok(v) = HeaderValue::from_str(note) {
            res.headers_mut().insert(header::HeaderName::from_static("x-tidecast-audio"), v);
        }
    }
    let peer = Peer::new(svc.rtc.clone(), negotiated.pc, negotiated.inbox);
    let senders = negotiated.senders;
    let rtc = svc.rtc.clone();
    svc.rtc.spawn(
        async move {
            let _demand = demand;
            let w = crate::actors::viewer::whep::WhepSession {
                peer,
                guard,
                session,
                senders,
                channel,
                opus_from,
                cancel,
            };
            crate::actors::viewer::whep::run(rtc, w).await
        }
        .instrument(span),
    );
    res
}

/// The resource of `kind` named by the path, if it is that channel's.
fn resource(svc: &WebRtcService, req: &HttpRequest) -> Result<(String, SessionEntry), Box<HttpResponse>> {
    let kind = if req.path().starts_with("/whip/") { SessionKind::Whip } else { SessionKind::Whep };
    let channel = req.match_info().get("channel").unwrap_or_default();
    let id = req.match_info().get("session").unwrap_or_default();
    match svc.rtc.session(id) {
        Some(e) if e.kind == kind && e.channel == channel => Ok((id.to_owned(), e)),
        _ => Err(Box::new(error_response(
            ErrorKind::NotFound,
            "no such WebRTC session (it ended or never existed)",
        ))),
    }
}

/// RFC 9725 §4.4: the client ends the session.
async fn delete(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let svc = match service(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match resource(svc, &req) {
        Ok((_, e)) => {
            e.cancel.cancel();
            HttpResponse::Ok().finish()
        }
        Err(r) => *r,
    }
}

/// RFC 9725 §4.3: trickle ICE and ICE restarts. The server is ICE-lite: it learns the client's
/// addresses from the client's checks, so trickled candidates need nothing (204). An ICE
/// restart (new credentials) is not supported: 422, as §4.3.1 says for a server that supports
/// only one of the two; the client starts a new session instead.
async fn patch(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let svc = match service(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (_, entry) = match resource(svc, &req) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let frag_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/trickle-ice-sdpfrag"));
    if !frag_type {
        return unsupported_media_type("application/trickle-ice-sdpfrag");
    }
    let etag = format!("\"{}\"", entry.ufrag);
    if let Some(m) = req.headers().get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if m.trim() != "*" && m.trim() != etag {
            return error_response(ErrorKind::FailedPrecondition, "If-Match does not name this ICE session");
        }
    }
    let text = String::from_utf8_lossy(&body);
    let ufrag = text.lines().find_map(|l| l.trim().strip_prefix("a=ice-ufrag:")).map(str::trim);
    // The fragment's ufrag is the client's; a restart changes it. Without a stored remote ufrag,
    // a restart is told by `If-Match: *` (RFC 9725 §4.3.2 makes restarts send it).
    let restart =
        req.headers().get(header::IF_MATCH).is_some_and(|v| v.as_bytes() == b"*") && ufrag.is_some();
    if restart {
        return HttpResponse::UnprocessableEntity().json(json!({"error": {
            "code": "ice_restart_unsupported",
            "message": "ICE restarts are not supported; start a new session",
        }}));
    }
    HttpResponse::NoContent().finish()
}
