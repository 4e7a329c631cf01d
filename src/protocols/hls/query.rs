//! Playlist request queries, both ways: [`parse_query`] splits a request's query into the LL-HLS
//! delivery directives (`_HLS_msn`, `_HLS_part`, `_HLS_skip`) and everything else (an access
//! token, say), and the encoders write the rest back onto every URI of the response.
//!
//! Spec: draft-pantos-hls-rfc8216bis §6.2.5 (delivery directives, `_HLS_` is reserved), §4.2
//! (decimal-integer); RFC 3986 §2.3, §3.4 (what a query may hold literally); the
//! `application/x-www-form-urlencoded` convention that `+` is a space.
//!
//! Percent-encoding is the `percent-encoding` crate's; this module only chooses the byte sets
//! and keeps decoding strict (see [`decode_component`]).
//!
//! Invariant: whatever a client sends, [`encode_query`] output contains no byte that could end a
//! quoted attribute or a playlist line (`"`, CR, LF, `#`, controls, non-ASCII).

use std::borrow::Cow;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};

use super::model::SkipRequest;

/// The query of a media playlist request, split into delivery directives and everything else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HlsQuery {
    /// `_HLS_msn`: block until this segment (or, with `part`, this part of it) is listed.
    pub msn: Option<u64>,
    /// `_HLS_part`: 0-based part index within `msn`.
    pub part: Option<u32>,
    /// `_HLS_skip`: delta update requested.
    pub skip: SkipRequest,
    /// Every other parameter (e.g. `token`), decoded, in request order. Unknown `_HLS_` parameters
    /// (reserved by §6.2.5, e.g. the withdrawn `_HLS_push`) are dropped, not passed on.
    pub other: Vec<(String, String)>,
}

impl HlsQuery {
    /// `other` re-encoded as a query string, ready for [`RenderOptions::uri_query`](super::RenderOptions::uri_query), so the
    /// playlist's URIs carry the same token as the request.
    pub fn passthrough_query(&self) -> String {
        let pairs = self.other.iter().map(|(k, v)| {
            format!("{}={}", utf8_percent_encode(k, COMPONENT), utf8_percent_encode(v, COMPONENT))
        });
        pairs.collect::<Vec<_>>().join("&")
    }
}

/// Why a playlist query was refused; every variant maps to HTTP 400. Messages never repeat the
/// value of a non-directive parameter, which may be an access token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlsQueryError {
    #[error("_HLS_part requires _HLS_msn (RFC 8216bis 6.2.5.2)")]
    PartWithoutMsn,
    #[error("{key} must be a decimal integer, got {value:?}")]
    NotANumber { key: &'static str, value: String },
    #[error("_HLS_skip must be YES or v2, got {value:?}")]
    BadSkip { value: String },
    #[error("{key} appears more than once")]
    Repeated { key: &'static str },
    #[error("malformed percent-encoding in query parameter #{index}")]
    BadEncoding { index: usize },
}

/// Longest directive value quoted back in an error message.
const MAX_ECHO: usize = 32;

/// Parse a playlist request query (without the leading `?`): `&`-separated, percent-decoded
/// (`+` is a space) `key=value` pairs. Directive values must be decimal integers (`_HLS_msn`,
/// `_HLS_part`) or exactly `YES`/`v2` (`_HLS_skip`); a repeated directive or `_HLS_part` without
/// `_HLS_msn` is an error. Empty pairs are ignored; a key without `=` has the value `""`.
pub fn parse_query(query: &str) -> Result<HlsQuery, HlsQueryError> {
    let mut q = HlsQuery::default();
    let mut skip_seen = false;
    for (index, pair) in query.split('&').enumerate().filter(|(_, p)| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_component(raw_key).ok_or(HlsQueryError::BadEncoding { index })?;
        let value = decode_component(raw_value).ok_or(HlsQueryError::BadEncoding { index })?;
        match key.as_str() {
            "_HLS_msn" => {
                if q.msn.is_some() {
                    return Err(HlsQueryError::Repeated { key: "_HLS_msn" });
                }
                q.msn = Some(parse_decimal(&value, "_HLS_msn")?);
            }
            "_HLS_part" => {
                if q.part.is_some() {
                    return Err(HlsQueryError::Repeated { key: "_HLS_part" });
                }
                q.part = Some(parse_decimal(&value, "_HLS_part")?);
            }
            "_HLS_skip" => {
                if skip_seen {
                    return Err(HlsQueryError::Repeated { key: "_HLS_skip" });
                }
                skip_seen = true;
                q.skip = match value.as_str() {
                    "YES" => SkipRequest::Yes,
                    "v2" => SkipRequest::V2,
                    _ => return Err(HlsQueryError::BadSkip { value: echo(&value) }),
                };
            }
            k if k.starts_with("_HLS_") => {}
            _ => q.other.push((key, value)),
        }
    }
    if q.part.is_some() && q.msn.is_none() {
        return Err(HlsQueryError::PartWithoutMsn);
    }
    Ok(q)
}

fn echo(value: &str) -> String {
    value.chars().take(MAX_ECHO).collect()
}

/// A decimal-integer (§4.2: digits only, no sign, no spaces).
fn parse_decimal<T: std::str::FromStr>(value: &str, key: &'static str) -> Result<T, HlsQueryError> {
    let bad = || HlsQueryError::NotANumber { key, value: echo(value) };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

/// Percent-decode one key or value: `+` is a space, `%XX` is a byte, and the result must be UTF-8.
///
/// Strict on purpose, where WHATWG URL parsing (and so `form_urlencoded::parse`) is lenient: a
/// `%` not followed by two hex digits is refused instead of kept literally, and bytes that are not
/// UTF-8 are refused instead of replaced with U+FFFD. Either way the client sent something it did
/// not mean, and a clear 400 ([`HlsQueryError::BadEncoding`]) beats passing a mangled token on.
fn decode_component(s: &str) -> Option<String> {
    let escapes_well_formed = s
        .split('%')
        .skip(1)
        .all(|after| after.as_bytes().get(..2).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)));
    if !escapes_well_formed {
        return None;
    }
    // `+` becomes a space before decoding, so an encoded `%2B` still decodes to `+`.
    let spaced = if s.contains('+') { Cow::Owned(s.replace('+', " ")) } else { Cow::Borrowed(s) };
    percent_decode_str(&spaced).decode_utf8().ok().map(Cow::into_owned)
}

/// Bytes [`HlsQuery::passthrough_query`] escapes in a key or value: all but RFC 3986 unreserved
/// (`A-Z a-z 0-9 - . _ ~`), so `&`, `=`, `+` and `%` in a decoded value cannot change its meaning.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Bytes [`encode_query`] escapes: those RFC 3986 §3.4 does not allow literally in a query (C0
/// controls, DEL, space, `" # < > [ \ ] ^ ` { | }`; non-ASCII bytes are always escaped). `%` is
/// not in the set: the query is expected to be encoded already, and re-encoding would change its
/// meaning.
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Percent-encode every byte that may not appear literally in a URI query, so a client-supplied
/// query cannot break out of a quoted attribute or a URI line.
pub(super) fn encode_query(q: &str) -> String {
    utf8_percent_encode(q, QUERY).to_string()
}

/// Append an (already encoded) query to a URI, with `?` or `&` as needed, before any fragment.
pub(super) fn with_query(uri: &str, query: &str) -> String {
    if query.is_empty() {
        return uri.to_owned();
    }
    let (base, fragment) = match uri.find('#') {
        Some(i) => uri.split_at(i),
        None => (uri, ""),
    };
    let sep = match base.find('?') {
        None => "?",
        Some(i) if i + 1 == base.len() || base.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{base}{sep}{query}{fragment}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_query_accepts_directives() {
        assert_eq!(parse_query("").unwrap(), HlsQuery::default());
        let q = parse_query("_HLS_msn=12&_HLS_part=3&token=abc").unwrap();
        assert_eq!((q.msn, q.part, q.skip), (Some(12), Some(3), SkipRequest::No));
        assert_eq!(q.other, vec![("token".to_owned(), "abc".to_owned())]);
        assert_eq!(parse_query("_HLS_skip=YES").unwrap().skip, SkipRequest::Yes);
        assert_eq!(parse_query("_HLS_msn=0&_HLS_skip=v2").unwrap().skip, SkipRequest::V2);
        assert_eq!(parse_query("_HLS_msn=7").unwrap().part, None);
        // Decoding, empty pairs, bare keys, reserved-but-unknown directives.
        let q = parse_query("token=a%2Bb%20c+d&&flag&_HLS_push=1&%5FHLS_msn=5").unwrap();
        assert_eq!(q.msn, Some(5));
        assert_eq!(q.other, vec![("token".into(), "a+b c d".into()), ("flag".into(), String::new())]);
    }

    #[test]
    fn parse_query_refuses_bad_directives() {
        use HlsQueryError::*;
        assert_eq!(parse_query("_HLS_part=1"), Err(PartWithoutMsn));
        assert_eq!(parse_query("_HLS_part=1&token=x"), Err(PartWithoutMsn));
        for bad in [
            "_HLS_msn=abc",
            "_HLS_msn=-1",
            "_HLS_msn=",
            "_HLS_msn=+1",
            "_HLS_msn=1.0",
            "_HLS_msn=99999999999999999999999",
        ] {
            assert!(matches!(parse_query(bad), Err(NotANumber { key: "_HLS_msn", .. })), "{bad}");
        }
        assert!(matches!(parse_query("_HLS_msn=1&_HLS_part=x"), Err(NotANumber { key: "_HLS_part", .. })));
        assert!(matches!(parse_query("_HLS_msn=1&_HLS_part=4294967296"), Err(NotANumber { .. })));
        assert_eq!(parse_query("_HLS_skip=yes"), Err(BadSkip { value: "yes".into() }));
        assert_eq!(parse_query("_HLS_skip=NO"), Err(BadSkip { value: "NO".into() }));
        assert_eq!(parse_query("_HLS_msn=1&_HLS_msn=2"), Err(Repeated { key: "_HLS_msn" }));
        assert_eq!(parse_query("_HLS_skip=YES&_HLS_skip=YES"), Err(Repeated { key: "_HLS_skip" }));
        let err = parse_query("token=secret%zz").unwrap_err();
        assert_eq!(err, BadEncoding { index: 0 });
        assert!(!err.to_string().contains("secret"));
        assert!(PartWithoutMsn.to_string().contains("_HLS_msn"));
    }

    #[test]
    fn passthrough_query_reencodes() {
        let q = parse_query("_HLS_msn=3&token=a%20b%26c&x=%C3%A9").unwrap();
        assert_eq!(q.passthrough_query(), "token=a%20b%26c&x=%C3%A9");
        assert_eq!(parse_query(&q.passthrough_query()).unwrap().other, q.other);
    }

    #[test]
    fn decoding_is_strict() {
        assert_eq!(decode_component("a%2Bb+c%20d").as_deref(), Some("a+b c d"));
        assert_eq!(decode_component("%C3%A9%c3%a9").as_deref(), Some("éé"));
        assert_eq!(decode_component("").as_deref(), Some(""));
        // Lenient decoders keep these literally; we refuse them.
        for bad in ["%", "a%", "%4", "%zz", "%%41", "%+1", "%-1", "%C3", "%FF"] {
            assert_eq!(decode_component(bad), None, "{bad}");
        }
        assert_eq!(parse_query("a=1&&b=%G0"), Err(HlsQueryError::BadEncoding { index: 2 }));
    }

    #[test]
    fn encode_query_escapes_exactly_what_a_query_may_not_hold() {
        let printable: String = (b' '..=b'~').map(char::from).collect();
        assert_eq!(
            encode_query(&printable),
            "%20!%22%23$%&'()*+,-./0123456789:;%3C=%3E?@ABCDEFGHIJKLMNOPQRSTUVWXYZ%5B%5C%5D%5E_\
             %60abcdefghijklmnopqrstuvwxyz%7B%7C%7D~"
        );
        assert_eq!(encode_query("\r\n\t\u{7f}é"), "%0D%0A%09%7F%C3%A9");
        assert_eq!(encode_query("t=%41%zz"), "t=%41%zz");
    }

    #[test]
    fn with_query_separators() {
        assert_eq!(with_query("a.m4s", "t=1"), "a.m4s?t=1");
        assert_eq!(with_query("a.m4s?x=2", "t=1"), "a.m4s?x=2&t=1");
        assert_eq!(with_query("a.m4s?", "t=1"), "a.m4s?t=1");
        assert_eq!(with_query("a.m4s?x=2&", "t=1"), "a.m4s?x=2&t=1");
        assert_eq!(with_query("a.m4s#f", "t=1"), "a.m4s?t=1#f");
        assert_eq!(with_query("a.m4s", ""), "a.m4s");
    }
}
