//! The Unix-socket framing: a 4-byte big-endian length, then that many bytes
//! of binary plist holding one message dictionary.
//!
//! Decoding distinguishes "need more bytes" (`Ok(None)`) from "this
//! connection is sending garbage" (`Err`, close it), and refuses an oversized
//! length from the header alone, before anything is allocated for the body.

use std::io::Cursor;

use plist::Value;

/// Largest frame body accepted or sent.
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Bytes of length prefix.
pub const HEADER_LEN: usize = 4;
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

/// Parses a frame body (the bytes after the header).
pub fn decode_body(body: &[u8]) -> Result<Value, FrameError> {
    if !body.starts_with(BPLIST_MAGIC) {
        return Err(FrameError::NotBinaryPlist);
    }
    Ok(Value::from_reader(Cursor::new(body))?)
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
}
