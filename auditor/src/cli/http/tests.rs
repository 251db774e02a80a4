use ledger::{
    hash::{TreeSize, hash_leaf},
    proof::MemoryTree,
};

use super::{HttpError, TileLog, parse_response, subtree};

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
    let (status, body) =
        parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhelloextra").unwrap();
    assert_eq!((status, body.as_slice()), (200, b"hello".as_slice()));
    let (status, body) = parse_response(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=1\r\nlo\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!((status, body.as_slice()), (200, b"hello".as_slice()));
    let (status, body) = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
    assert_eq!((status, body.as_slice()), (404, b"nope".as_slice()));
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
            parse_response(bad).is_err(),
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
