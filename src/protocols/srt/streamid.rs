//! SRT stream ids: which channel a caller wants to publish to or read, in every form senders
//! use. Pure: the string from the SRT handshake (`SRTO_STREAMID`, at most 512 bytes) in, a
//! [`StreamId`] or a [`StreamIdError`] out; the listener turns an error into an SRT reject code.
//!
//! Forms (PRODUCT.md "Publishing" and "Playback"):
//! - The SRT access-control syntax (Haivision SRT `AccessControl.md`, "Standard Keys"):
//!   `#!::r=live/<key>,m=publish` and `#!::r=<channel>,m=request`. `m` defaults to `request` as
//!   the document says; `u=` (user) and `s=` (session) are accepted and ignored, `t=` must be
//!   `stream` when present; our own key `token=` carries a playback token for non-public
//!   channels. Unknown keys are ignored (the document reserves them for applications).
//! - `publish:live/<key>` (also `publish:<key>`), as mediamtx and OBS setups write it.
//! - `read:<channel>` with an optional `?token=<playback token>`.
//! - A bare `<key>`: publish (OBS's "Stream Key" field with an `srt://` server).
//!
//! ffmpeg 5.1 does not percent-decode `%23` in its `streamid` option (INTEROP-NOTES), so a
//! literal `%23!::` prefix is accepted as `#!::`.
//!
//! Invariant: the stream key never appears in `Debug` output or an error message.

use std::fmt;

/// The longest stream id SRT carries (`SRTO_STREAMID`, 512 bytes).
pub const MAX_LEN: usize = 512;

/// What a caller asked for.
#[derive(Clone, PartialEq, Eq)]
pub enum StreamId {
    /// Publish with this stream key (the channel is found from the key).
    Publish { key: String },
    /// Read this channel, with a playback token when it is not public.
    Request { channel: String, token: Option<String> },
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Publish { .. } => f.write_str("Publish { key: <redacted> }"),
            StreamId::Request { channel, token } => f
                .debug_struct("Request")
                .field("channel", channel)
                .field("token", &token.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("stream id is empty")]
    Empty,
    #[error("stream id is {len} bytes, longer than SRT's {MAX_LEN}")]
    TooLong { len: usize },
    #[error("stream id has a control character at byte {offset}")]
    Control { offset: usize },
    #[error("stream id: access-control field {field:?} at byte {offset} has no '='")]
    Field { field: String, offset: usize },
    #[error("stream id: mode {mode:?} is not publish or request")]
    Mode { mode: String },
    #[error("stream id: type {kind:?} is not stream")]
    Type { kind: String },
    #[error("stream id: no resource (r=)")]
    NoResource,
    #[error("stream id: the publish resource must be live/<key>")]
    PublishResource,
    #[error("stream id: channel name {channel:?} is not valid")]
    Channel { channel: String },
}

/// Parses a stream id from the SRT handshake.
pub fn parse(id: &str) -> Result<StreamId, StreamIdError> {
    if id.is_empty() {
        return Err(StreamIdError::Empty);
    }
    if id.len() > MAX_LEN {
        return Err(StreamIdError::TooLong { len: id.len() });
    }
    if let Some(offset) = id.bytes().position(|b| b.is_ascii_control()) {
        return Err(StreamIdError::Control { offset });
    }
    if let Some(rest) = id.strip_prefix("#!::").or_else(|| id.strip_prefix("%23!::")) {
        return access_control(rest, id.len() - rest.len());
    }
    if let Some(rest) = id.strip_prefix("publish:") {
        return publish(rest.strip_prefix("live/").unwrap_or(rest));
    }
    if let Some(rest) = id.strip_prefix("read:") {
        let (channel, token) = match rest.split_once("?token=") {
            Some((c, t)) => (c, Some(t.to_owned())),
            None => (rest, None),
        };
        return request(channel, token);
    }
    publish(id.strip_prefix("live/").unwrap_or(id))
}

/// The `key=value,key=value` list after `#!::`. `{...}` nesting (reserved in the document) is
/// not supported: no sender we know writes it.
fn access_control(list: &str, base: usize) -> Result<StreamId, StreamIdError> {
    let (mut resource, mut mode, mut token) = (None, None, None);
    let mut offset = base;
    for field in list.split(',') {
        let Some((k, v)) = field.split_once('=') else {
            return Err(StreamIdError::Field { field: redact(field), offset });
        };
        match k {
            "r" => resource = Some(v),
            "m" => mode = Some(v),
            "t" if v != "stream" => return Err(StreamIdError::Type { kind: v.to_owned() }),
            "token" => token = Some(v.to_owned()),
            _ => {} // u=, s=, h= and application keys: not ours to check
        }
        offset += field.len() + 1;
    }
    let resource = resource.ok_or(StreamIdError::NoResource)?;
    match mode.unwrap_or("request") {
        "publish" => publish(resource.strip_prefix("live/").ok_or(StreamIdError::PublishResource)?),
        "request" => request(resource.strip_prefix("live/").unwrap_or(resource), token),
        m => Err(StreamIdError::Mode { mode: m.to_owned() }),
    }
}

fn publish(key: &str) -> Result<StreamId, StreamIdError> {
    if key.is_empty() {
        return Err(StreamIdError::PublishResource);
    }
    Ok(StreamId::Publish { key: key.to_owned() })
}

/// Channel names are what the rest of the server allows in a URL path segment; checked here
/// only for shape (the registry decides whether it exists).
fn request(channel: &str, token: Option<String>) -> Result<StreamId, StreamIdError> {
    let ok = !channel.is_empty()
        && channel.len() <= 64
        && channel.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(StreamIdError::Channel { channel: channel.chars().take(64).collect() });
    }
    Ok(StreamId::Request { channel: channel.to_owned(), token: token.filter(|t| !t.is_empty()) })
}

/// A malformed field may hold a key (`#!::live/KEY`): show only its length.
fn redact(field: &str) -> String {
    format!("<{} bytes>", field.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(key: &str) -> StreamId {
        StreamId::Publish { key: key.into() }
    }

    fn request(channel: &str, token: Option<&str>) -> StreamId {
        StreamId::Request { channel: channel.into(), token: token.map(Into::into) }
    }

    #[test]
    fn publish_forms() {
        for id in [
            "#!::r=live/k3y,m=publish",
            "#!::m=publish,r=live/k3y",
            "#!::r=live/k3y,m=publish,u=obs,s=123",
            "%23!::r=live/k3y,m=publish",
            "publish:live/k3y",
            "publish:k3y",
            "k3y",
            "live/k3y",
        ] {
            assert_eq!(parse(id), Ok(publish("k3y")), "{id}");
        }
    }

    #[test]
    fn request_forms() {
        assert_eq!(parse("#!::r=main,m=request"), Ok(request("main", None)));
        assert_eq!(parse("#!::r=main"), Ok(request("main", None)), "m defaults to request");
        assert_eq!(parse("#!::r=live/main,m=request,token=a.b_c"), Ok(request("main", Some("a.b_c"))));
        assert_eq!(parse("read:main"), Ok(request("main", None)));
        assert_eq!(parse("read:main?token=tok"), Ok(request("main", Some("tok"))));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(""), Err(StreamIdError::Empty));
        assert_eq!(parse(&"k".repeat(513)), Err(StreamIdError::TooLong { len: 513 }));
        assert_eq!(
            parse("#!::r=x,m=bidirectional"),
            Err(StreamIdError::Mode { mode: "bidirectional".into() })
        );
        assert_eq!(parse("#!::r=x,t=file"), Err(StreamIdError::Type { kind: "file".into() }));
        assert_eq!(parse("#!::m=publish"), Err(StreamIdError::NoResource));
        assert_eq!(parse("#!::r=k3y,m=publish"), Err(StreamIdError::PublishResource));
        assert!(matches!(parse("read:../etc"), Err(StreamIdError::Channel { .. })));
        assert!(matches!(parse("k\u{1}y"), Err(StreamIdError::Control { offset: 1 })));
    }

    #[test]
    fn keys_never_show() {
        let secret = "s3cr3t-key";
        let dbg = format!("{:?}", parse(&format!("#!::r=live/{secret},m=publish")));
        assert!(!dbg.contains(secret), "{dbg}");
        let err = parse(&format!("#!::live/{secret}")).unwrap_err().to_string();
        assert!(!err.contains(secret), "{err}");
        let dbg = format!("{:?}", parse("read:main?token=tok3n"));
        assert!(!dbg.contains("tok3n"), "{dbg}");
    }
}
