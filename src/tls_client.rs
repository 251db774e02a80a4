//! TLS for akashi's own outbound calls: the OpenID Connect key set (`oidc.jwks_url`) and
//! witnesses at `https://` URLs. Both trust CA certificates read from a PEM file (by default the
//! system's bundle, [`SYSTEM_CA_BUNDLE`]) and speak TLS 1.2 or 1.3 with the ring provider the
//! gRPC port already uses. Nothing here accepts an unverified certificate.

use std::{
    io::{self, Read as _},
    path::Path,
    sync::Arc,
};

use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// The system's CA bundle (Debian's `ca-certificates`), trusted unless a file is configured.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The largest CA or certificate file read, in bytes (the system bundle is a few hundred KiB).
pub const MAX_CA_FILE: u64 = 4 << 20;

/// The PEM file `path`, read whole if it is at most [`MAX_CA_FILE`] bytes.
///
/// # Errors
///
/// The file cannot be read, or is larger than the cap (`InvalidData`).
pub fn read_pem(path: &Path) -> io::Result<Vec<u8>> {
    let mut pem = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CA_FILE + 1)
        .read_to_end(&mut pem)?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is larger than {MAX_CA_FILE} bytes"),
        ));
    }
    Ok(pem)
}

/// The CA certificates in the PEM file `path`, of at most [`MAX_CA_FILE`] bytes. A certificate
/// rustls cannot use is skipped, as TLS clients do; a file with none it can use is an error
/// (`InvalidData`), since trusting nothing would make every connection fail later with a less
/// clear message.
///
/// # Errors
///
/// The file cannot be read, is larger than the cap, is not PEM, or holds no usable CA
/// certificate.
pub fn roots_from(path: &Path) -> io::Result<RootCertStore> {
    let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidData, reason);
    let pem = read_pem(path)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(e.to_string()))?;
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(invalid("holds no CA certificate".to_owned()));
    }
    Ok(roots)
}

/// A client configuration trusting `roots`, without a client certificate.
///
/// # Errors
///
/// The ring provider offers none of the safe protocol versions (a defect of this build).
pub fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_and_a_missing_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = roots_from(&empty).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("no CA certificate"), "{err}");
        let err = roots_from(&dir.path().join("missing.pem")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let large = dir.path().join("large.pem");
        std::fs::write(&large, vec![b'A'; MAX_CA_FILE as usize + 1]).unwrap();
        let err = roots_from(&large).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn a_ca_certificate_is_trusted() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        let roots = roots_from(&path).unwrap();
        assert_eq!(roots.len(), 1);
        client_config(roots).unwrap();
    }
}
