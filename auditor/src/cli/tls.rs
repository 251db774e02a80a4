//! Which certificate authorities `akashi-audit` trusts for `https://` servers: the PEM file
//! given with `--ca`, or else the system's bundle ([`SYSTEM_CA_BUNDLE`]). The same roots serve
//! gRPC (tonic) and the tiles client ([`super::http`]); a server certificate that does not chain
//! to them ends the connection, and nothing is read from it.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use tokio_rustls::rustls::{
    self, ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject as _},
};

/// The system's CA bundle (Debian's `ca-certificates`), trusted unless `--ca` names a file.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The largest CA file read, in bytes (the system bundle is a few hundred KiB).
pub const MAX_CA_FILE: u64 = 4 << 20;

/// How `akashi-audit` connects to `https://` servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA file (PEM) trusted; the system's bundle without one.
    pub ca: Option<PathBuf>,
    /// A client certificate chain and its private key (PEM files), for a gRPC port that
    /// requires mTLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The largest client certificate or key file read, in bytes.
pub const MAX_IDENTITY_FILE: u64 = 64 * 1024;

/// The CA file in force: `ca`, or the system's bundle.
fn path(ca: Option<&Path>) -> PathBuf {
    ca.map_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE), Path::to_path_buf)
}

/// The PEM text of the CA file in force, at most [`MAX_CA_FILE`] bytes, once it is known to hold
/// a CA certificate rustls can use (so that gRPC, whose TLS skips what it cannot parse, fails
/// naming the file rather than at the handshake).
///
/// # Errors
///
/// As [`client_config`].
pub(crate) fn ca_pem(ca: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    Ok(roots(ca)?.0)
}

/// The CA file's text and the roots it holds.
fn roots(ca: Option<&Path>) -> anyhow::Result<(Vec<u8>, RootCertStore)> {
    let pem = read(ca)?;
    let shown = path(ca);
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("the CA file `{}` is not PEM", shown.display()))?;
        // A certificate rustls cannot use is skipped, as TLS clients do.
        let _ = roots.add(cert);
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "the CA file `{}` holds no CA certificate",
        shown.display()
    );
    Ok((pem, roots))
}

/// The CA file in force, read whole if it is at most [`MAX_CA_FILE`] bytes.
fn read(ca: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    read_capped(&path(ca), "CA file", MAX_CA_FILE)
}

/// The client certificate chain and key of `identity`, each at most [`MAX_IDENTITY_FILE`] bytes.
///
/// # Errors
///
/// A file cannot be read or is larger than the cap.
pub(crate) fn identity_pem(identity: &(PathBuf, PathBuf)) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let (cert, key) = identity;
    Ok((
        read_capped(cert, "client certificate", MAX_IDENTITY_FILE)?,
        read_capped(key, "client key", MAX_IDENTITY_FILE)?,
    ))
}

/// The file `path`, read whole if it is at most `max` bytes; errors call it `what`.
fn read_capped(path: &Path, what: &str, max: u64) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the {what} `{}`", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the {what} `{}`", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= max,
        "the {what} `{}` is larger than {max} bytes",
        path.display()
    );
    Ok(bytes)
}

/// A rustls client trusting the CA file in force.
///
/// # Errors
///
/// The file cannot be read, is not PEM, or holds no CA certificate rustls can use.
pub(crate) fn client_config(ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let (_, roots) = roots(ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
