//! Request framing and decoding.
//!
//! A Kafka request is a 4-byte big-endian size followed by that many bytes: the request
//! header (api key, api version, correlation id, client id, tagged fields) and the body.
//! Everything here treats the bytes as hostile: no panic, no allocation sized by the input
//! beyond the frame itself (the vendored `kafka-protocol` bounds array preallocation; see
//! `vendor/PATCHES.md`).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Kafka's default `socket.request.max.bytes`: 100 MiB.
pub const REQUEST_MAX_BYTES_DEFAULT: usize = 104_857_600;

/// The first fields of every request header, readable whatever the API and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Why a request frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request header")]
    Short(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Validates a frame size read off the wire against the configured limit.
pub fn check_frame_size(size: i32, max_bytes: usize) -> Result<usize, String> {
    if size < 0 {
        return Err(format!("negative frame size {size}"));
    }
    let size = size as usize;
    if size > max_bytes {
        return Err(format!(
            "frame of {size} bytes exceeds socket.request.max.bytes ({max_bytes}); raise it in the broker config if this client is legitimate"
        ));
    }
    Ok(size)
}

/// Reads api key, version and correlation id from the start of a frame.
pub fn peek_header(frame: &[u8]) -> Result<RawHeader, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::Short(frame.len()));
    }
    Ok(RawHeader {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Decodes a whole request frame (without its size prefix). The caller has already checked
/// that the API and version are supported; any version the crate knows decodes here.
pub fn decode_request(frame: Bytes) -> Result<(RequestHeader, RequestKind), DecodeError> {
    let raw = peek_header(&frame)?;
    let api = ApiKey::try_from(raw.api_key).map_err(|_| DecodeError::UnknownApiKey(raw.api_key))?;
    let version = raw.api_version;
    let range = api.valid_versions();
    let malformed = |reason: String| DecodeError::Malformed {
        api,
        version,
        reason,
    };
    if version < range.min || version > range.max {
        return Err(malformed(format!("version outside {range}")));
    }
    let mut buf = frame;
    let header_version = api.request_header_version(version);
    let header =
        RequestHeader::decode(&mut buf, header_version).map_err(|e| malformed(e.to_string()))?;
    let body = RequestKind::decode(api, &mut buf, version).map_err(|e| malformed(e.to_string()))?;
    Ok((header, body))
}

/// A response the broker built could not be encoded: a bug in the broker, never the client's fault.
#[derive(Debug, thiserror::Error)]
#[error("response encoding failed: {0}")]
pub struct EncodeError(pub String);

/// Encodes a response frame, size prefix included.
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buf, api.response_header_version(version))
        .map_err(|e| EncodeError(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| EncodeError(e.to_string()))?;
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A MetadataRequest v1 whose topic-array count is 0x7fffffff: upstream 0.18 tried to
    /// preallocate ~154 GB for it and aborted the process.
    #[test]
    fn hostile_array_count_does_not_abort() {
        let mut frame = vec![0, 3, 0, 1, 0, 0, 0, 9, 0xff, 0xff];
        frame.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
        let err = decode_request(Bytes::from(frame)).expect_err("must not decode");
        assert!(
            matches!(
                err,
                DecodeError::Malformed {
                    api: ApiKey::Metadata,
                    version: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn oversize_and_negative_frames_are_refused() {
        assert!(check_frame_size(-1, REQUEST_MAX_BYTES_DEFAULT).is_err());
        assert!(check_frame_size(
            REQUEST_MAX_BYTES_DEFAULT as i32 + 1,
            REQUEST_MAX_BYTES_DEFAULT
        )
        .is_err());
        assert_eq!(check_frame_size(10, REQUEST_MAX_BYTES_DEFAULT), Ok(10));
    }

    #[test]
    fn unknown_api_key_is_named() {
        let frame = Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(
            decode_request(frame),
            Err(DecodeError::UnknownApiKey(0x7f00))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_request_bodies_never_panic(key in 0i16..90, version in 0i16..18, body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut frame = Vec::new();
            frame.extend_from_slice(&key.to_be_bytes());
            frame.extend_from_slice(&version.to_be_bytes());
            frame.extend_from_slice(&1i32.to_be_bytes());
            frame.extend_from_slice(&body);
            let _ = decode_request(Bytes::from(frame));
        }
    }
}
