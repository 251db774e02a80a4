//! gRPC plumbing: connecting to the server (plainly, or over TLS for an `https://` address,
//! trusting [`super::tls`]'s roots), attaching the bearer token, and turning the wire's byte
//! strings into hashes.

use anyhow::Context as _;
use ledger::{
    hash::{Hash, TreeSize},
    proof::{ConsistencyProof, MAX_PROOF_LEN},
};
use proto::pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::tls::ClientTls;

/// The largest gRPC response accepted: a page of 1024 entries with bodies of a few KiB each fits
/// many times over; a body at the ledger's 1 MiB limit still fits in a page of its own.
pub(crate) const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Connects to `addr` (`host:port` or `http://host:port`; `https://host:port` over TLS,
/// trusting `tls.ca` or, without one, the system's bundle, and showing `tls.identity` when
/// given).
pub(crate) async fn connect(addr: &str, tls: &ClientTls) -> anyhow::Result<Channel> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let mut endpoint =
        Endpoint::from_shared(uri).with_context(|| format!("`{addr}` is not a gRPC address"))?;
    if addr
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    {
        let roots = Certificate::from_pem(super::tls::ca_pem(tls.ca.as_deref())?);
        let mut config = ClientTlsConfig::new().ca_certificate(roots);
        if let Some(identity) = &tls.identity {
            let (cert, key) = super::tls::identity_pem(identity)?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(config)
            .with_context(|| format!("TLS for `{addr}`"))?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("while connecting to `{addr}`"))
}

/// A request carrying `authorization: Bearer <token>`.
pub(crate) fn authorized<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .context("the token is not a valid header value")?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// A list of 32-byte hashes from the wire.
pub(crate) fn hashes(path: &[Vec<u8>], what: &str) -> anyhow::Result<Vec<Hash>> {
    anyhow::ensure!(
        path.len() <= MAX_PROOF_LEN,
        "{what} has {} hashes, more than {MAX_PROOF_LEN}",
        path.len()
    );
    path.iter()
        .map(|h| Hash::from_slice(h).with_context(|| format!("while reading the {what}")))
        .collect()
}

/// Asks the transparency service for the consistency proof from `old` to `new`.
pub(crate) async fn consistency_proof(
    channel: Channel,
    old: TreeSize,
    new: TreeSize,
) -> anyhow::Result<ConsistencyProof> {
    let mut client = pb::transparency_service_client::TransparencyServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE);
    let response = client
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: old.get(),
            new_size: new.get(),
        })
        .await
        .with_context(|| {
            format!("while asking for the consistency proof from size {old} to {new}")
        })?
        .into_inner();
    Ok(ConsistencyProof {
        old_size: TreeSize(response.old_size),
        new_size: TreeSize(response.new_size),
        path: hashes(&response.path, "consistency proof")?,
    })
}

/// The log's newest witnessed checkpoint note, with its cosignatures (none yet: `None`).
pub(crate) async fn newest_witnessed(channel: Channel) -> anyhow::Result<Option<String>> {
    let mut client = pb::transparency_service_client::TransparencyServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE);
    let response = client
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .context("while asking for the witnessed checkpoint")?
        .into_inner();
    Ok(Some(response.witnessed_checkpoint).filter(|note| !note.is_empty()))
}

/// The latest signed checkpoint note.
pub(crate) async fn checkpoint(channel: Channel) -> anyhow::Result<String> {
    let mut client = pb::transparency_service_client::TransparencyServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE);
    Ok(client
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .context("while fetching the latest checkpoint")?
        .into_inner()
        .checkpoint)
}

/// The newest witnessed checkpoint note (`witnessed_checkpoint`), or an error when the log has
/// none.
pub(crate) async fn witnessed_checkpoint(channel: Channel) -> anyhow::Result<String> {
    newest_witnessed(channel)
        .await?
        .context("the log has no witnessed checkpoint (yet)")
}
