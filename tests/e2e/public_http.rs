//! The public HTTP read path (c2sp.org/tlog-tiles) against a running server: the checkpoint,
//! hash tiles and entry bundles at tree sizes that are and are not multiples of 256, checked
//! against roots recomputed from the served leaves; cache lifetimes; malformed and unknown paths.

use std::net::SocketAddr;

use akashi::auth::Role;
use ledger::{
    hash::{Hash, TreeSize, hash_leaf},
    proof::{MemoryTree, NodeSource},
    tile::decode_entry_bundle,
};

use crate::{
    api::{Api, checkpoint_root},
    harness::{TIMEOUT, TestServer},
};

struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(TIMEOUT, exchange).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let headers = String::from_utf8(response[..split].to_vec()).unwrap();
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        headers: headers.to_ascii_lowercase(),
        body: response[split + 4..].to_vec(),
    }
}

/// Fetches every leaf of a tree of `size` through entry bundles and checks each served hash
/// tile against the leaves. Returns the reference tree built from the served leaves.
async fn follow(addr: SocketAddr, size: u64) -> MemoryTree {
    let mut tree = MemoryTree::new();
    let mut index = 0u64;
    while index * 256 < size {
        let width = (size - index * 256).min(256);
        let path = if width == 256 {
            format!("/tile/entries/{index:03}")
        } else {
            format!("/tile/entries/{index:03}.p/{width}")
        };
        let reply = get(addr, &path).await;
        assert_eq!(reply.status, 200, "{path}");
        let leaves = decode_entry_bundle(&reply.body).unwrap();
        assert_eq!(leaves.len() as u64, width, "{path}");
        for leaf in leaves {
            tree.push_leaf(leaf);
        }
        let tile_path = path.replace("/entries", "/0");
        let tile = get(addr, &tile_path).await;
        assert_eq!(tile.status, 200, "{tile_path}");
        let want: Vec<u8> = tree.leaf_hashes()[(index * 256) as usize..]
            .iter()
            .flat_map(|h| h.0)
            .collect();
        assert_eq!(tile.body, want, "{tile_path}");
        let cache = if width == 256 {
            "immutable"
        } else {
            "max-age=60"
        };
        assert!(
            tile.headers.contains(cache),
            "{tile_path}: {}",
            tile.headers
        );
        index += 1;
    }
    tree
}

#[tokio::test]
async fn a_tile_client_can_follow_the_log() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    let addr = server.http_addr;
    // One activation entry plus 255 organisations: exactly one full tile.
    for i in 0..255 {
        api.org(&format!("org-{i}"), "pharma").await;
    }
    for size in [256u64, 300] {
        while api.size().await < size {
            api.org(&format!("more-{}", api.size().await), "pharma")
                .await;
        }
        let checkpoint = get(addr, "/checkpoint").await;
        assert_eq!(checkpoint.status, 200);
        assert!(checkpoint.headers.contains("no-cache"));
        let note = String::from_utf8(checkpoint.body).unwrap();
        let (cp_size, root) = checkpoint_root(&note, &server.vkey);
        assert_eq!(cp_size, TreeSize(size));
        let tree = follow(addr, size).await;
        assert_eq!(
            tree.root(),
            root,
            "root recomputed from served leaves at {size}"
        );
        for leaf in tree.leaf_hashes() {
            assert_ne!(*leaf, Hash::default());
        }
        // The level-1 tile holds the root of every full level-0 tile.
        let level1 = get(addr, "/tile/1/000.p/1").await;
        assert_eq!(level1.status, 200);
        assert_eq!(level1.body, tree.node(8, 0).unwrap().0.to_vec());
    }
    // Served leaves are the public leaves: they hash to what the log signed.
    let bundle = get(addr, "/tile/entries/000").await;
    let first = decode_entry_bundle(&bundle.body).unwrap()[1].to_vec();
    assert!(
        String::from_utf8(first.clone())
            .unwrap()
            .contains("directory.organization")
    );
    assert_eq!(hash_leaf(&first), follow(addr, 300).await.leaf_hashes()[1]);

    let vkey = get(addr, "/vkey").await;
    assert_eq!(String::from_utf8(vkey.body).unwrap().trim(), server.vkey);

    for (path, status) in [
        ("/tile/0/1", 400),         // not three digits
        ("/tile/0/000.p/0", 400),   // empty partial tile
        ("/tile/0/000.p/256", 400), // a full tile is not partial
        ("/tile/x/000", 400),
        ("/tile/entries/abc", 400),
        ("/tile/0/002", 404), // beyond the tree
        ("/tile/0/001", 404), // only 44 of its hashes exist
        ("/tile/0/001.p/45", 404),
        ("/tile/entries/001", 404),
        ("/nothing-here", 404),
    ] {
        assert_eq!(get(addr, path).await.status, status, "{path}");
    }
    assert_eq!(api.size().await, 300, "reads append nothing");
    server.stop().await;
}
