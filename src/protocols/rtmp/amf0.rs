//! Bounded pre-check of AMF0 message bodies before rml_rtmp decodes them.
//!
//! rml_rtmp 0.8 decodes every AMF0 command (type 20) and data message (18), and the "AMF3"
//! types 17 and 15, which it decodes as AMF0 too (17 after skipping one leading 0x00), with
//! rml_amf0 0.3's recursive descent: one set of stack frames per object, ECMA array or strict
//! array level and no depth limit, and the resulting `Amf0Value` tree is dropped recursively as
//! well. A single unauthenticated `connect` nested a few thousand levels deep (about 5 bytes a
//! level) overflows the connection thread's stack, and a stack overflow aborts the whole
//! process. rml_rtmp has no AMF3 decoder and hands shared-object messages (16, 19) and
//! aggregates (22) up undecoded, so these four types are the only AMF it parses.
//!
//! We wrap rml_rtmp rather than fork it: [`check_message`] walks a complete message body with an
//! explicit stack (no recursion, O(depth) memory, depth bounded) before the session ever sees
//! the bytes, and refuses anything nested deeper than [`MAX_DEPTH`]. A fork would mean owning
//! and re-auditing the whole chunk/session/AMF stack and merging every upstream fix by hand,
//! for a bug a 200-line pre-check removes; the walk is a faithful but deliberately conservative
//! copy of rml_amf0's grammar (AMF0 spec §2: markers 0x00-0x03, 0x05, 0x06, 0x08, 0x09, 0x0A,
//! anything else is an error there), so a message rml_amf0 would nest deeper than the limit can
//! never pass.
//!
//! The same walk also refuses the two message shapes that make rml_rtmp 0.8 panic instead of
//! returning an error: a command with fewer than three top-level values (`Vec::drain(..3)` in
//! `amf0_command::deserialize`) and an `@setDataFrame` without its name and value (indexing in
//! `handle_amf0_data_set_data_frame`).
//!
//! Invariant: a body this module accepts, decoded by rml_amf0 0.3, nests at most [`MAX_DEPTH`]
//! containers and, for commands, yields at least three values.

/// Deepest container nesting we accept. Real clients use 1-3 (the `connect` command object,
/// `onMetaData`'s ECMA array, maybe an object inside it); rml_amf0 would need thousands of
/// levels to exhaust a 2 MiB stack, so 32 leaves a wide margin on both sides.
pub const MAX_DEPTH: usize = 32;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Amf0Error {
    #[error("AMF0 values nested deeper than {limit} levels (at byte {offset} of the body)")]
    TooDeep { limit: usize, offset: usize },
    #[error("AMF0 command has {values} top-level values; a command needs name, transaction id and object")]
    ShortCommand { values: usize },
    #[error("@setDataFrame with {values} top-level values; it needs a name and a value")]
    ShortSetDataFrame { values: usize },
}

/// Check one complete message body of RTMP message type `type_id` (RTMP spec §7.1) the way
/// rml_rtmp 0.8's `MessagePayload::to_rtmp_message` would read it. Types it does not decode as
/// AMF pass unchecked.
pub fn check_message(type_id: u8, data: &[u8]) -> Result<(), Amf0Error> {
    match type_id {
        20 => check_command(data),
        // rml_rtmp: "Fake amf3 commands usually seem to have a 0 in front of the amf0 data".
        17 => check_command(if data.first() == Some(&0) { &data[1..] } else { data }),
        18 | 15 => {
            let scan = scan(data, MAX_DEPTH)?;
            if scan.complete && scan.first_is(b"@setDataFrame") {
                // rml_rtmp indexes the name after `@setDataFrame`, and for `onMetaData` (while
                // publishing) the value after it, without checking that they exist.
                let needed = if scan.second_is(b"onMetaData") { 3 } else { 2 };
                if scan.values < needed {
                    return Err(Amf0Error::ShortSetDataFrame { values: scan.values });
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_command(data: &[u8]) -> Result<(), Amf0Error> {
    let scan = scan(data, MAX_DEPTH)?;
    // Only a body rml_amf0 decodes without error reaches the `drain(..3)`; a malformed one gets
    // rml_rtmp's own error, which is as good as ours.
    if scan.complete && scan.values < 3 {
        return Err(Amf0Error::ShortCommand { values: scan.values });
    }
    Ok(())
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Scan<'a> {
    /// Top-level values, counted as rml_amf0 counts them (it stops at the end of the body or at
    /// a top-level object-end marker).
    pub values: usize,
    /// Deepest container nesting seen.
    pub depth: usize,
    /// False when rml_amf0 would fail on this body (truncated value, unknown marker, ...).
    pub complete: bool,
    /// The bytes of the first two top-level values, when they are strings.
    strings: [Option<&'a [u8]>; 2],
}

impl Scan<'_> {
    fn first_is(&self, s: &[u8]) -> bool {
        self.strings[0] == Some(s)
    }
    fn second_is(&self, s: &[u8]) -> bool {
        self.strings[1] == Some(s)
    }
}

/// One open container on the explicit stack.
enum Open {
    /// An object or ECMA array: a sequence of (UTF-8 name, value) until an empty name + 0x09.
    Object,
    /// A strict array with this many values still to read (rml_amf0 also ends one early at
    /// 0x09 or at the end of the body).
    Strict { left: u32 },
}

/// Walk `data` as a sequence of AMF0 values, iteratively, refusing nesting deeper than
/// `max_depth`. Mirrors rml_amf0 0.3 `deserialize` step for step, except that it does not
/// validate UTF-8 (so it may walk further than rml_amf0, never less far).
pub fn scan(data: &[u8], max_depth: usize) -> Result<Scan<'_>, Amf0Error> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Open> = Vec::new();
    let mut out = Scan::default();
    loop {
        let marker = match stack.last_mut() {
            None => match r.u8() {
                // The end of the body, or rml_amf0's top-level 0x09, ends the value list.
                None | Some(OBJECT_END) => {
                    out.complete = true;
                    return Ok(out);
                }
                Some(m) => {
                    if out.values < 2 && m == STRING {
                        out.strings[out.values] = r.peek_string();
                    }
                    out.values += 1;
                    m
                }
            },
            Some(Open::Object) => {
                let Some(name_len) = r.u16() else { return Ok(out) };
                if name_len == 0 {
                    if r.u8() != Some(OBJECT_END) {
                        return Ok(out);
                    }
                    stack.pop();
                    continue;
                }
                // rml_amf0 tolerates a short read of the name.
                r.skip_up_to(name_len as usize);
                match r.u8() {
                    // A property without a value is an error there.
                    None | Some(OBJECT_END) => return Ok(out),
                    Some(m) => m,
                }
            }
            Some(Open::Strict { left }) => {
                if *left == 0 {
                    stack.pop();
                    continue;
                }
                *left -= 1;
                match r.u8() {
                    None | Some(OBJECT_END) => {
                        stack.pop();
                        continue;
                    }
                    Some(m) => m,
                }
            }
        };
        let opened = match marker {
            NUMBER => r.skip(8).map(|_| None),
            BOOLEAN => r.skip(1).map(|_| None),
            NULL | UNDEFINED => Some(None),
            STRING => r.u16().map(|len| {
                r.skip_up_to(len as usize);
                None
            }),
            OBJECT => Some(Some(Open::Object)),
            ECMA_ARRAY => r.skip(4).map(|_| Some(Open::Object)),
            STRICT_ARRAY => r.u32().map(|left| Some(Open::Strict { left })),
            _ => None,
        };
        match opened {
            // Truncated or unknown: rml_amf0 fails here, so nothing deeper is ever decoded.
            None => return Ok(out),
            Some(None) => {}
            Some(Some(open)) => {
                if stack.len() >= max_depth {
                    return Err(Amf0Error::TooDeep { limit: max_depth, offset: r.pos });
                }
                stack.push(open);
                out.depth = out.depth.max(stack.len());
            }
        }
    }
}

/// A cursor over the body; every read is checked.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn skip_up_to(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.data.len());
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// The string value starting at the cursor (its length prefix next), without consuming it.
    fn peek_string(&self) -> Option<&'a [u8]> {
        let len = self.data.get(self.pos..self.pos + 2)?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        self.data.get(self.pos + 2..self.pos + 2 + len)
    }
}

/// A `connect` command body (AMF0: name, transaction id, command object) whose command object is
/// `depth` containers of `kind` (0x03 object, 0x08 ECMA array, 0x0A strict array), each holding
/// the next, around a null; objects and ECMA arrays are closed properly, so the body is valid
/// AMF0. Test and fuzz-seed support (the attack this module stops); not used by the server.
pub fn nested_connect(kind: u8, depth: usize) -> Vec<u8> {
    let mut v = vec![0x02, 0, 7];
    v.extend(b"connect");
    v.push(0x00);
    v.extend(1f64.to_be_bytes());
    for _ in 0..depth {
        match kind {
            0x03 => v.extend([0x03, 0, 3, b'a', b'p', b'p']),
            0x08 => v.extend([0x08, 0, 0, 0, 1, 0, 3, b'a', b'p', b'p']),
            _ => v.extend([0x0A, 0, 0, 0, 1]),
        }
    }
    v.push(0x05);
    if kind != 0x0A {
        for _ in 0..depth {
            v.extend([0, 0, 0x09]);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rml_rtmp::rml_amf0;
    use rml_rtmp::rml_amf0::Amf0Value;
    use std::collections::HashMap;

    fn string(s: &str) -> Vec<u8> {
        let mut v = vec![STRING];
        v.extend((s.len() as u16).to_be_bytes());
        v.extend(s.as_bytes());
        v
    }

    fn number(n: f64) -> Vec<u8> {
        let mut v = vec![NUMBER];
        v.extend(n.to_be_bytes());
        v
    }

    /// `depth` containers of `kind`, each holding the next, around a null.
    pub(crate) fn nested(kind: u8, depth: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for _ in 0..depth {
            match kind {
                OBJECT => v.extend([OBJECT, 0, 1, b'a']),
                ECMA_ARRAY => v.extend([ECMA_ARRAY, 0, 0, 0, 1, 0, 1, b'a']),
                _ => v.extend([STRICT_ARRAY, 0, 0, 0, 1]),
            }
        }
        v.push(NULL);
        for _ in 0..depth {
            if kind != STRICT_ARRAY {
                v.extend([0, 0, OBJECT_END]);
            }
        }
        v
    }

    /// A `connect` command body whose command object is `object`.
    pub(crate) fn connect_with(object: &[u8]) -> Vec<u8> {
        let mut v = string("connect");
        v.extend(number(1.0));
        v.extend(object);
        v
    }

    #[test]
    fn deep_nesting_is_refused_for_every_container() {
        for kind in [OBJECT, ECMA_ARRAY, STRICT_ARRAY] {
            let body = connect_with(&nested(kind, 5_000));
            assert!(
                matches!(check_message(20, &body), Err(Amf0Error::TooDeep { limit: MAX_DEPTH, .. })),
                "kind {kind:#x}"
            );
            assert!(matches!(check_message(18, &body), Err(Amf0Error::TooDeep { .. })));
            assert!(matches!(check_message(15, &body), Err(Amf0Error::TooDeep { .. })));
            let mut amf3 = vec![0];
            amf3.extend(&body);
            assert!(matches!(check_message(17, &amf3), Err(Amf0Error::TooDeep { .. })));
        }
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_matches_rml_amf0() {
        for kind in [OBJECT, ECMA_ARRAY, STRICT_ARRAY] {
            let body = connect_with(&nested(kind, MAX_DEPTH));
            let scan = scan(&body, MAX_DEPTH).unwrap();
            assert_eq!((scan.values, scan.depth, scan.complete), (3, MAX_DEPTH, true), "kind {kind:#x}");
            let decoded = rml_amf0::deserialize(&mut std::io::Cursor::new(&body)).unwrap();
            assert_eq!(decoded.len(), 3);
            let over = connect_with(&nested(kind, MAX_DEPTH + 1));
            assert!(check_message(20, &over).is_err());
        }
    }

    #[test]
    fn a_real_connect_passes() {
        // The shape ffmpeg 5.1 and OBS 30 send: name, transaction id, one flat object.
        let mut props = HashMap::new();
        props.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
        props.insert("flashVer".to_string(), Amf0Value::Utf8String("FMLE/3.0".into()));
        props.insert("tcUrl".to_string(), Amf0Value::Utf8String("rtmp://h/live".into()));
        props.insert("fpad".to_string(), Amf0Value::Boolean(false));
        props.insert("capabilities".to_string(), Amf0Value::Number(15.0));
        props.insert("videoCodecs".to_string(), Amf0Value::Number(252.0));
        props.insert("objectEncoding".to_string(), Amf0Value::Null);
        let body = rml_amf0::serialize(&vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(props),
        ])
        .unwrap();
        assert_eq!(check_message(20, &body), Ok(()));
        let s = scan(&body, MAX_DEPTH).unwrap();
        assert_eq!((s.values, s.depth, s.complete), (3, 1, true));
    }

    #[test]
    fn onmetadata_with_nested_ecma_array_passes() {
        let mut inner = HashMap::new();
        inner.insert("x".to_string(), Amf0Value::StrictArray(vec![Amf0Value::Number(1.0)]));
        let mut meta = HashMap::new();
        meta.insert("width".to_string(), Amf0Value::Number(640.0));
        meta.insert("extra".to_string(), Amf0Value::Object(inner));
        let mut body = string("@setDataFrame");
        body.extend(string("onMetaData"));
        let mut ecma = vec![ECMA_ARRAY, 0, 0, 0, 2];
        let obj = rml_amf0::serialize(&vec![Amf0Value::Object(meta)]).unwrap();
        ecma.extend(&obj[1..]);
        body.extend(ecma);
        assert_eq!(check_message(18, &body), Ok(()));
        assert_eq!(scan(&body, MAX_DEPTH).unwrap().depth, 3);
    }

    #[test]
    fn shapes_that_panic_rml_rtmp_are_refused() {
        let short = string("connect");
        assert_eq!(check_message(20, &short), Err(Amf0Error::ShortCommand { values: 1 }));
        let mut two = string("connect");
        two.extend(number(1.0));
        assert_eq!(check_message(20, &two), Err(Amf0Error::ShortCommand { values: 2 }));
        assert_eq!(check_message(17, &[0]), Err(Amf0Error::ShortCommand { values: 0 }));
        let sdf = string("@setDataFrame");
        assert_eq!(check_message(18, &sdf), Err(Amf0Error::ShortSetDataFrame { values: 1 }));
        let mut sdf2 = sdf.clone();
        sdf2.extend(string("onMetaData"));
        assert_eq!(check_message(18, &sdf2), Err(Amf0Error::ShortSetDataFrame { values: 2 }));
        let mut cue = sdf.clone();
        cue.extend(string("onCuePoint"));
        assert_eq!(check_message(18, &cue), Ok(()));
        // Malformed bodies are left to rml_rtmp's own (non-panicking) error.
        assert_eq!(check_message(20, &[0x42]), Ok(()));
        // Not AMF as far as rml_rtmp is concerned.
        assert_eq!(check_message(19, &nested(OBJECT, 5_000)), Ok(()));
    }

    fn fragments() -> Vec<Vec<u8>> {
        vec![
            vec![OBJECT],
            vec![ECMA_ARRAY, 0, 0, 0, 3],
            vec![STRICT_ARRAY, 0, 0, 0, 2],
            vec![STRICT_ARRAY, 0xff, 0xff, 0xff, 0xff],
            vec![0, 1, b'k'],
            vec![0, 0, OBJECT_END],
            vec![OBJECT_END],
            number(2.0),
            string("ab"),
            vec![BOOLEAN, 1],
            vec![NULL],
            vec![UNDEFINED],
            vec![0x0B],
            vec![STRING, 0, 9, b'x'],
        ]
    }

    proptest! {
        /// The walk never stops earlier than rml_amf0, never counts top-level values
        /// differently and never sees less depth, on bodies built from AMF0 fragments.
        #[test]
        fn agrees_with_rml_amf0(parts in prop::collection::vec(prop::sample::select(fragments()), 0..16)) {
            let body = parts.concat();
            let ours = scan(&body, 64).unwrap();
            match rml_amf0::deserialize(&mut std::io::Cursor::new(&body)) {
                Ok(values) => {
                    prop_assert!(ours.complete);
                    prop_assert_eq!(ours.values, values.len());
                    prop_assert!(ours.depth >= depth_of(&values));
                }
                // We skip UTF-8 validation, so only an invalid string may make rml_amf0 fail
                // where we found the body complete.
                Err(_) => prop_assert!(!ours.complete || body.iter().any(|b| *b >= 0x80)),
            }
        }
    }

    fn depth_of(values: &[Amf0Value]) -> usize {
        values
            .iter()
            .map(|v| match v {
                Amf0Value::Object(m) => 1 + depth_of(&m.values().cloned().collect::<Vec<_>>()),
                Amf0Value::StrictArray(a) => 1 + depth_of(a),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }
}
