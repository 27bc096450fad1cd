//! The Unix-socket framing: a 4-byte big-endian length, then that many bytes
//! of binary plist holding one message dictionary.
//!
//! Decoding distinguishes "need more bytes" (`Ok(None)`) from "this
//! connection is sending garbage" (`Err`, close it), and refuses an oversized
//! length from the header alone, before anything is allocated for the body.

use std::io::Cursor;

use plist::stream::{BinaryReader, Event};
use plist::Value;

/// Largest frame body accepted or sent.
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Bytes of length prefix.
pub const HEADER_LEN: usize = 4;
/// Deepest nesting a message may have. The deepest real message, a status
/// reply (reply → tunnels → status → counters → drops), has five levels.
pub const MAX_DEPTH: usize = 16;
/// Most values (each string, number, array or dictionary is one) a message
/// may expand to. A binary plist may reference one object many times, so a
/// frame of a few hundred bytes can describe 2^64 values: without this bound
/// any local user could exhaust the root helper's memory.
pub const MAX_VALUES: usize = 1 << 16;
/// Most string and data bytes a message may expand to, for the same reason.
pub const MAX_EXPANDED_BYTES: usize = 4 * MAX_FRAME_LEN;
/// Why a message past each bound is refused: these words end the error,
/// whichever transport (a frame here, an XPC tree in `ztun-xpc`) carried it.
pub const REFUSED_DEPTH: &str = "nested deeper than 16 levels";
pub const REFUSED_VALUES: &str = "more than 65536 values";
pub const REFUSED_BYTES: &str = "more than 4 MiB of strings and data";
// The refusal messages spell these numbers out.
const _: () = assert!(MAX_DEPTH == 16 && MAX_VALUES == 65_536 && MAX_EXPANDED_BYTES == 4 << 20);
/// Every binary plist starts with this magic (CFBinaryPList.c).
const BPLIST_MAGIC: &[u8; 8] = b"bplist00";

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge { len: usize },
    #[error("empty frame")]
    Empty,
    #[error("frame body is not a binary plist")]
    NotBinaryPlist,
    #[error("frame body is too complex: {0}")]
    TooComplex(&'static str),
    #[error("frame body is a malformed plist: {0}")]
    Plist(#[from] plist::Error),
}

/// Reads a header and returns the body length it announces, refusing zero and
/// anything over [`MAX_FRAME_LEN`]. Streaming readers call this on the first
/// four bytes and then read exactly that many.
pub fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    // u32 always fits usize on the 32- and 64-bit targets ztun builds for.
    let len = u32::from_be_bytes(header) as usize;
    match len {
        0 => Err(FrameError::Empty),
        n if n > MAX_FRAME_LEN => Err(FrameError::TooLarge { len: n }),
        n => Ok(n),
    }
}

/// Parses a frame body (the bytes after the header), refusing a message that
/// nests deeper than [`MAX_DEPTH`] or expands past [`MAX_VALUES`] values or
/// [`MAX_EXPANDED_BYTES`] bytes. The bounds are enforced on the event stream,
/// before any tree exists, so a hostile frame costs at most the bounds.
pub fn decode_body(body: &[u8]) -> Result<Value, FrameError> {
    if !body.starts_with(BPLIST_MAGIC) {
        return Err(FrameError::NotBinaryPlist);
    }
    let (mut depth, mut values, mut bytes) = (0_usize, 0_usize, 0_usize);
    let mut refused = None;
    let events = BinaryReader::new(Cursor::new(body)).map_while(|event| {
        if let Ok(e) = &event {
            match e {
                Event::StartArray(_) | Event::StartDictionary(_) => depth += 1,
                Event::EndCollection => depth = depth.saturating_sub(1),
                Event::String(s) => bytes += s.len(),
                Event::Data(d) => bytes += d.len(),
                _ => {}
            }
            if !matches!(e, Event::EndCollection) {
                values += 1;
            }
            refused = if depth > MAX_DEPTH {
                Some(REFUSED_DEPTH)
            } else if values > MAX_VALUES {
                Some(REFUSED_VALUES)
            } else if bytes > MAX_EXPANDED_BYTES {
                Some(REFUSED_BYTES)
            } else {
                None
            };
            if refused.is_some() {
                return None;
            }
        }
        Some(event)
    });
    let parsed = Value::from_events(events);
    match refused {
        Some(why) => Err(FrameError::TooComplex(why)),
        None => Ok(parsed?),
    }
}

/// Decodes one frame from the front of `buf`. Returns the message and the
/// number of bytes it used, `Ok(None)` when `buf` holds only part of a frame,
/// or an error when the frame can never be valid.
pub fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = body_len(*header)?;
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, HEADER_LEN + len)))
}

/// Encodes `value` as one frame, appended to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    value.to_writer_binary(&mut *out)?;
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(FrameError::TooLarge { len });
    }
    let header = u32::try_from(len).map_err(|_| FrameError::TooLarge { len })?;
    out[start..start + HEADER_LEN].copy_from_slice(&header.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plist::Dictionary;

    fn message() -> Value {
        let mut d = Dictionary::new();
        d.insert("v".into(), Value::from(1_i64));
        d.insert("op".into(), Value::from("status"));
        Value::Dictionary(d)
    }

    fn framed(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out).unwrap();
        out
    }

    #[test]
    fn header_is_big_endian_body_length() {
        let bytes = framed(&message());
        let body = bytes.len() - HEADER_LEN;
        assert_eq!(bytes[..4], u32::try_from(body).unwrap().to_be_bytes());
        assert_eq!(&bytes[4..12], b"bplist00");
    }

    #[test]
    fn round_trips_a_message() {
        let bytes = framed(&message());
        let (value, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(value, message());
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn every_split_point_is_incomplete_until_the_last_byte() {
        let bytes = framed(&message());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        assert!(decode(&bytes).unwrap().is_some());
    }

    #[test]
    fn two_frames_back_to_back_decode_one_at_a_time() {
        let mut bytes = framed(&message());
        let first = bytes.len();
        bytes.extend(framed(&Value::from(Dictionary::new())));
        let (_, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(used, first);
        let (second, used2) = decode(&bytes[used..]).unwrap().unwrap();
        assert_eq!(second, Value::Dictionary(Dictionary::new()));
        assert_eq!(used + used2, bytes.len());
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        // 2 GiB announced, no body sent: must be an error now, not "need more".
        let header = 0x8000_0000_u32.to_be_bytes();
        assert!(matches!(
            decode(&header),
            Err(FrameError::TooLarge { len: 0x8000_0000 })
        ));
        let just_over = u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_be_bytes();
        assert!(matches!(
            body_len(just_over),
            Err(FrameError::TooLarge { .. })
        ));
        let at_cap = u32::try_from(MAX_FRAME_LEN).unwrap().to_be_bytes();
        assert_eq!(body_len(at_cap).unwrap(), MAX_FRAME_LEN);
    }

    #[test]
    fn zero_length_frame_is_invalid() {
        assert!(matches!(decode(&[0, 0, 0, 0]), Err(FrameError::Empty)));
    }

    #[test]
    fn xml_plist_body_is_refused() {
        let mut xml = Vec::new();
        message().to_writer_xml(&mut xml).unwrap();
        let mut bytes = u32::try_from(xml.len()).unwrap().to_be_bytes().to_vec();
        bytes.extend(xml);
        assert!(matches!(decode(&bytes), Err(FrameError::NotBinaryPlist)));
    }

    #[test]
    fn truncated_binary_plist_is_invalid_not_incomplete() {
        let mut bytes = framed(&message());
        // Announce a shorter body than the plist needs: the body is complete
        // as framed, and broken.
        let short = bytes.len() - HEADER_LEN - 6;
        bytes[..4].copy_from_slice(&u32::try_from(short).unwrap().to_be_bytes());
        bytes.truncate(HEADER_LEN + short);
        assert!(matches!(decode(&bytes), Err(FrameError::Plist(_))));
    }

    #[test]
    fn encoding_more_than_the_cap_fails_and_leaves_out_untouched() {
        let big = Value::Data(vec![0; MAX_FRAME_LEN]);
        let mut out = vec![7];
        assert!(matches!(
            encode(&big, &mut out),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(out, [7]);
    }

    /// A binary plist written by hand: `objects` are encoded objects, object
    /// 0 is the root, references and offsets are 4 bytes wide.
    fn bplist(objects: &[Vec<u8>]) -> Vec<u8> {
        let mut out = BPLIST_MAGIC.to_vec();
        let mut offsets = Vec::new();
        for o in objects {
            offsets.push(u32::try_from(out.len()).unwrap());
            out.extend_from_slice(o);
        }
        let table = out.len() as u64;
        for o in offsets {
            out.extend_from_slice(&o.to_be_bytes());
        }
        out.extend_from_slice(&[0; 6]); // trailer: unused
        out.extend_from_slice(&[4, 4]); // offset size, ref size
        out.extend_from_slice(&(objects.len() as u64).to_be_bytes());
        out.extend_from_slice(&0_u64.to_be_bytes()); // root object
        out.extend_from_slice(&table.to_be_bytes());
        out
    }

    /// Marker nibble + count: inline below 15, else 0xF and a 4-byte int.
    fn marker(kind: u8, n: usize) -> Vec<u8> {
        if n < 15 {
            vec![kind | u8::try_from(n).unwrap()]
        } else {
            let mut m = vec![kind | 0x0F, 0x12];
            m.extend_from_slice(&u32::try_from(n).unwrap().to_be_bytes());
            m
        }
    }

    /// An array of `n` references, all to object `to`.
    fn array_of_refs(n: usize, to: u32) -> Vec<u8> {
        let mut a = marker(0xA0, n);
        for _ in 0..n {
            a.extend_from_slice(&to.to_be_bytes());
        }
        a
    }

    /// `depth` arrays, each holding the next; the innermost is empty.
    fn nested_arrays(depth: u32) -> Vec<Vec<u8>> {
        (0..depth)
            .map(|i| {
                if i + 1 == depth {
                    vec![0xA0]
                } else {
                    array_of_refs(1, i + 1)
                }
            })
            .collect()
    }

    fn ascii(s: &str) -> Vec<u8> {
        let mut o = marker(0x50, s.len());
        o.extend_from_slice(s.as_bytes());
        o
    }

    #[test]
    fn hand_written_bplist_decodes_like_plists_own() {
        let body = bplist(&[array_of_refs(3, 1), ascii("203.0.113.0/24")]);
        let expected = Value::Array(vec![Value::String("203.0.113.0/24".into()); 3]);
        assert_eq!(decode_body(&body).unwrap(), expected);
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        // 100,000 arrays, each holding the next: 900 KB, under the frame cap.
        // Unbounded, the tree parses and then overflows the stack when dropped.
        let depth = 100_000_u32;
        let objects = nested_arrays(depth);
        let body = bplist(&objects);
        assert!(body.len() <= MAX_FRAME_LEN);
        let err = decode_body(&body).unwrap_err();
        assert!(
            matches!(err, FrameError::TooComplex("nested deeper than 16 levels")),
            "{err}"
        );
    }

    #[test]
    fn nesting_at_the_limit_is_accepted() {
        let depth = u32::try_from(MAX_DEPTH).unwrap();
        let objects = nested_arrays(depth);
        assert!(decode_body(&bplist(&objects)).is_ok());
    }

    #[test]
    fn shared_references_cannot_multiply_values() {
        // 30,000 references to an array of 30,000 references to one integer:
        // 240 KB on the wire, 900 million values if expanded.
        let body = bplist(&[
            array_of_refs(30_000, 1),
            array_of_refs(30_000, 2),
            vec![0x10, 7],
        ]);
        let err = decode_body(&body).unwrap_err();
        assert!(
            matches!(err, FrameError::TooComplex("more than 65536 values")),
            "{err}"
        );
    }

    #[test]
    fn shared_references_cannot_multiply_bytes() {
        // 1,000 references to one 64 KiB string: 68 KB on the wire, 64 MiB expanded.
        let body = bplist(&[array_of_refs(1_000, 1), ascii(&"x".repeat(65_536))]);
        let err = decode_body(&body).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooComplex("more than 4 MiB of strings and data")
            ),
            "{err}"
        );
    }
}
