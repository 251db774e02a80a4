use super::*;

fn body(max_message: usize) -> FramedBody {
    FramedBody {
        inner: Body::empty(),
        max_message,
        framing: Framing::Prefix { seen: 0, len: 0 },
        failed: false,
    }
}

#[test]
fn frames_split_anywhere_are_followed() {
    let mut framed = body(8);
    // Two messages of 3 and 0 bytes, fed one byte at a time.
    for byte in [0u8, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0] {
        framed.advance(&[byte]).unwrap();
    }
    assert_eq!(framed.missing(), 0);
    framed.advance(&[0, 0, 0]).unwrap();
    assert_eq!(framed.missing(), 2);
}

#[test]
fn an_announced_length_over_the_limit_fails_before_the_message() {
    let mut framed = body(8);
    let err = framed.advance(&[0, 0, 0, 0, 9]).unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { len: 9, max: 8 }));
    let mut framed = body(8);
    let err = framed.advance(&[0, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
    assert!(matches!(
        err,
        Error::MessageTooLarge {
            len: 0xffff_ffff,
            max: 8
        }
    ));
}

#[test]
fn a_body_ending_inside_a_message_is_missing_its_rest() {
    let mut framed = body(8);
    framed.advance(&[0, 0, 0, 0, 5, 1, 2]).unwrap();
    assert_eq!(framed.missing(), 3);
}

#[test]
fn metadata_is_counted_as_http2_does() {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-a", http::HeaderValue::from_static("12345"));
    assert_eq!(metadata_len(&headers), 3 + 5 + 32);
}
