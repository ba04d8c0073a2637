//! Target `peer_frames`: the peer wire format (`ferrite_node::codec`), as a
//! frame body and as the byte stream of a peer connection.

use bytes::Bytes;
use ferrite_node::codec::{self, Frame};

/// The input is read two ways: as one frame body (`decode`), and as the bytes
/// a peer sent on a connection, taken frame by frame with the transport's
/// reader (`read_frame`, which parses the length prefixes). Every frame that
/// decodes must survive an encode/decode round trip.
pub fn peer_frames(data: &[u8]) {
    let _bound = crate::allocation::bound(data.len());
    if let Ok(frame) = codec::decode(Bytes::copy_from_slice(data)) {
        round_trip(&frame);
    }
    crate::runtime::block_on(async {
        let mut stream = data;
        while let Ok(Some(frame)) = codec::read_frame(&mut stream).await {
            round_trip(&frame);
        }
    });
}

fn round_trip(frame: &Frame) {
    let bytes = codec::encode(frame);
    let prefix: [u8; 4] = bytes[..4].try_into().expect("a 4-byte prefix");
    assert_eq!(codec::frame_len(prefix), Ok(bytes.len() - 4));
    assert_eq!(
        codec::decode(bytes.slice(4..)).as_ref(),
        Ok(frame),
        "a decoded frame changed in a round trip"
    );
}
