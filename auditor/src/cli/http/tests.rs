use ledger::{
    hash::{TreeSize, hash_leaf},
    proof::MemoryTree,
};

use std::path::{Path, PathBuf};

use super::{HttpError, TileLog, parse_response, subtree};

/// A PEM file holding one CA certificate (kept for the test process).
fn ca_file() -> PathBuf {
    static FILE: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
        (dir, path)
    })
    .1
    .clone()
}

#[test]
fn urls() {
    let log = TileLog::new("http://127.0.0.1:8080").unwrap();
    assert_eq!(
        (log.host.as_str(), log.prefix.as_str()),
        ("127.0.0.1:8080", "")
    );
    let log = TileLog::new("http://localhost/logs/a/").unwrap();
    assert_eq!(
        (log.host.as_str(), log.prefix.as_str()),
        ("localhost:80", "/logs/a")
    );
    assert_eq!(log.authority, "localhost");
    let log = TileLog::with_ca("https://[::1]:8443/logs", Some(&ca_file())).unwrap();
    assert_eq!(
        (log.host.as_str(), log.prefix.as_str()),
        ("[::1]:8443", "/logs")
    );
    let log = TileLog::with_ca("https://log.example", Some(&ca_file())).unwrap();
    assert_eq!(log.host, "log.example:443");
    assert!(matches!(
        TileLog::with_ca("https://log.example", Some(Path::new("/nonexistent/ca.pem"))),
        Err(HttpError::Ca(message)) if message.contains("/nonexistent/ca.pem")
    ));
    for bad in [
        "ftp://x",
        "127.0.0.1:8080",
        "http://",
        "http://a b/",
        "http://x/a b",
    ] {
        assert!(matches!(TileLog::new(bad), Err(HttpError::Url)), "{bad}");
    }
}

#[test]
fn responses() {
    let (status, body) = parse_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhelloextra",
        true,
    )
    .unwrap();
    assert_eq!((status, body.as_slice()), (200, b"hello".as_slice()));
    let (status, body) = parse_response(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=1\r\nlo\r\n0\r\n\r\n",
        true,
    )
    .unwrap();
    assert_eq!((status, body.as_slice()), (200, b"hello".as_slice()));
    let (status, body) = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope", true).unwrap();
    assert_eq!((status, body.as_slice()), (404, b"nope".as_slice()));
    // A TLS connection that ended without close_notify: a framed body is whole or refused, an
    // unframed one may have been cut and is refused.
    let (_, body) =
        parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false).unwrap();
    assert_eq!(body, b"hello");
    assert!(matches!(
        parse_response(b"HTTP/1.1 200 OK\r\n\r\nhel", false),
        Err(HttpError::Truncated)
    ));
    for bad in [
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort".as_slice(),
        b"SPDY 200\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab\r\n",
        b"no head at all",
    ] {
        assert!(
            parse_response(bad, true).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn subtree_roots_match_the_reference() {
    let leaves: Vec<_> = (0..64u8).map(|i| hash_leaf(&[i])).collect();
    let tree = MemoryTree::from_leaf_hashes(leaves.clone());
    for width in [1usize, 2, 4, 8, 16, 32, 64] {
        assert_eq!(
            subtree(&leaves[..width]),
            tree.root_at(TreeSize(width as u64)).unwrap()
        );
    }
}
