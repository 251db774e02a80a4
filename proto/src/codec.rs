//! The codec of every generated client and server: prost encoding, as
//! [`tonic_prost::ProstCodec`], except that a message that does not decode is answered
//! `INVALID_ARGUMENT` (the caller sent bad bytes) instead of `INTERNAL` (which tonic-prost
//! chooses, and which says the server failed).
//!
//! This is the one place in this crate that chooses a status code: the generated code creates
//! its codec by type, so the mapping has to live where the generated code can name it. It does
//! not limit message sizes (the server's edge layer does, for requests only, so that clients
//! still read answers larger than any request).

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstEncoder};

/// Prost encoding with decode errors mapped to `INVALID_ARGUMENT`; `T` is encoded, `U` decoded.
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _pd: PhantomData<(T, U)>,
}

/// The decoder of [`Codec`]: prost decoding with its errors mapped by [`decode_error`].
#[derive(Debug, Clone)]
pub struct CodecDecoder<U> {
    _pd: PhantomData<U>,
}

/// Decodes one `U` from `bytes` exactly as the server does, with the status it would answer.
///
/// # Errors
///
/// `INVALID_ARGUMENT` ([`decode_error`]) when `bytes` is not a valid `U`.
pub fn decode<U: Message + Default>(bytes: &[u8]) -> Result<U, Status> {
    U::decode(bytes).map_err(decode_error)
}

/// The status of a message that does not decode: `INVALID_ARGUMENT`, with prost's description
/// of what is wrong (it never repeats the message's bytes).
pub fn decode_error(error: prost::DecodeError) -> Status {
    Status::invalid_argument(format!("message is not valid protobuf: {error}"))
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CodecDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CodecDecoder { _pd: PhantomData }
    }
}

impl<U: Message + Default> Decoder for CodecDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // `ProstDecoder` turns every `prost::DecodeError` into `INTERNAL`; decode here instead.
        U::decode(buf).map(Some).map_err(decode_error)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
