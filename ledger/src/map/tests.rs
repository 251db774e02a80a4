use proptest::prelude::*;

use std::collections::BTreeMap;

use super::*;

const P: &[u8] = b"m/";

fn value(n: u8) -> Hash {
    Hash([n; 32])
}

fn insert_all(entries: &[(MapKey, Hash)]) -> (MemoryNodes, Hash) {
    let mut nodes = MemoryNodes::default();
    let mut root = EMPTY;
    for (key, value) in entries {
        root = update(&mut nodes, P, key, value).unwrap();
    }
    (nodes, root)
}

/// The store key of the tile at `top` on `key`'s path.
fn tile_key(prefix: &[u8], key: &MapKey, top: usize) -> Vec<u8> {
    TileId::on_path(key, top).store_key(prefix)
}

fn key_with_bits(bits: &[bool]) -> MapKey {
    let mut key = [0u8; 32];
    for (i, &b) in bits.iter().enumerate() {
        if b {
            key[i / 8] |= 0x80 >> (i % 8);
        }
    }
    key
}

#[test]
fn the_empty_map_proves_every_key_absent() {
    let nodes = MemoryNodes::default();
    let (proof, root) = prove(&nodes, P, &[9; 32]).unwrap();
    assert_eq!(root, EMPTY);
    assert_eq!(proof.siblings.len(), 0);
    assert_eq!(proof.verify(&EMPTY, &[9; 32]), Ok(None));
}

#[test]
fn a_single_key_is_the_root_leaf() {
    let (nodes, root) = insert_all(&[([1; 32], value(1))]);
    assert_eq!(root, leaf_hash(&[1; 32], &value(1)));
    let (proof, _) = prove(&nodes, P, &[1; 32]).unwrap();
    assert_eq!(proof.verify(&root, &[1; 32]), Ok(Some(value(1))));
    // Another key ends at the same leaf: absent.
    let (proof, _) = prove(&nodes, P, &[2; 32]).unwrap();
    assert_eq!(proof.verify(&root, &[2; 32]), Ok(None));
}

#[test]
fn keys_sharing_a_long_prefix_split_where_they_part() {
    // Equal on the first 20 bits, then apart.
    let mut a = key_with_bits(&[true; 20]);
    let mut b = a;
    a[2] |= 0x08; // bit 20 set
    b[31] = 1;
    let (nodes, root) = insert_all(&[(a, value(1)), (b, value(2))]);
    assert_eq!(root, root_of(&[(a, value(1)), (b, value(2))]));
    let (proof, _) = prove(&nodes, P, &a).unwrap();
    assert_eq!(proof.siblings.len(), 21);
    assert_eq!(proof.verify(&root, &a), Ok(Some(value(1))));
    assert_eq!(
        prove(&nodes, P, &b).unwrap().0.verify(&root, &b),
        Ok(Some(value(2)))
    );
}

#[test]
fn a_value_change_moves_the_root_and_the_old_proof_fails() {
    let entries: Vec<(MapKey, Hash)> = (0..50u8)
        .map(|i| ([i.wrapping_mul(37); 32], value(i)))
        .collect();
    let (mut nodes, root) = insert_all(&entries);
    let key = entries[10].0;
    let (old, _) = prove(&nodes, P, &key).unwrap();
    let new_root = update(&mut nodes, P, &key, &value(200)).unwrap();
    assert_ne!(root, new_root);
    assert_eq!(old.verify(&new_root, &key), Err(MapError::RootMismatch));
    let (new, proven) = prove(&nodes, P, &key).unwrap();
    assert_eq!(proven, new_root);
    assert_eq!(new.verify(&new_root, &key), Ok(Some(value(200))));
}

#[test]
fn a_proof_with_a_forged_value_or_for_another_key_fails() {
    let entries: Vec<(MapKey, Hash)> = (1..=20u8).map(|i| ([i; 32], value(i))).collect();
    let (nodes, root) = insert_all(&entries);
    let (mut proof, _) = prove(&nodes, P, &[5; 32]).unwrap();
    if let Terminal::Leaf { value, .. } = &mut proof.terminal {
        *value = Hash([0xee; 32]);
    }
    assert_eq!(proof.verify(&root, &[5; 32]), Err(MapError::RootMismatch));
    // Claiming absence by cutting the path short.
    let (mut proof, _) = prove(&nodes, P, &[5; 32]).unwrap();
    proof.terminal = Terminal::Empty;
    assert!(proof.verify(&root, &[5; 32]).is_err());
}

#[test]
fn shapes_no_compact_tree_has_are_refused() {
    let proof = MapProof {
        siblings: vec![Hash([3; 32]), EMPTY],
        terminal: Terminal::Empty,
    };
    assert!(matches!(
        proof.root_for(&[0; 32]),
        Err(MapError::Malformed(_))
    ));
    // A terminal leaf whose key leaves the path after the first bit.
    let proof = MapProof {
        siblings: vec![Hash([3; 32])],
        terminal: Terminal::Leaf {
            key: [0xff; 32],
            value: value(1),
        },
    };
    assert!(matches!(
        proof.root_for(&[0; 32]),
        Err(MapError::Malformed(_))
    ));
    let proof = MapProof {
        siblings: vec![Hash([3; 32]); KEY_BITS + 1],
        terminal: Terminal::Empty,
    };
    assert!(matches!(
        proof.root_for(&[0; 32]),
        Err(MapError::TooDeep { .. })
    ));
}

#[test]
fn a_corrupt_node_record_is_an_error_not_a_panic() {
    let (mut nodes, _) = insert_all(&[([1; 32], value(1)), ([0x81; 32], value(2))]);
    for v in nodes.0.values_mut() {
        v.truncate(10);
    }
    assert!(matches!(
        prove(&nodes, P, &[1; 32]),
        Err(MapError::Corrupt(_))
    ));
    assert!(matches!(
        update(&mut nodes, P, &[1; 32], &value(3)),
        Err(MapError::Corrupt(_))
    ));
}

#[test]
fn maps_under_different_prefixes_do_not_mix() {
    let mut nodes = MemoryNodes::default();
    update(&mut nodes, b"a/", &[1; 32], &value(1)).unwrap();
    let root_b = update(&mut nodes, b"b/", &[2; 32], &value(2)).unwrap();
    let (proof, root) = prove(&nodes, b"b/", &[1; 32]).unwrap();
    assert_eq!(root, root_b);
    assert_eq!(proof.verify(&root_b, &[1; 32]), Ok(None));
}

#[test]
fn keys_apart_only_in_their_last_bit_sit_at_the_bottom() {
    let a = [0x5a; 32];
    let mut b = a;
    b[31] ^= 1;
    let (nodes, root) = insert_all(&[(a, value(1)), (b, value(2))]);
    assert_eq!(root, root_of(&[(a, value(1)), (b, value(2))]));
    let (proof, _) = prove(&nodes, P, &b).unwrap();
    assert_eq!(proof.siblings.len(), KEY_BITS);
    assert_eq!(proof.verify(&root, &b), Ok(Some(value(2))));
    // One tile per TILE_LEVELS levels of their shared path, then a tile of its own for each
    // leaf at depth 256 (their paths part at the last bit).
    assert_eq!(nodes.0.len(), KEY_BITS / TILE_LEVELS + 2);
}

#[test]
fn a_batch_writes_each_tile_it_touches_once() {
    let entries: Vec<(MapKey, Hash)> = (0..200u8)
        .map(|i| (Sha256::digest([i]).into(), value(i)))
        .collect();
    let mut batched = MemoryNodes::default();
    let mut one_by_one = MemoryNodes::default();
    let mut counted = CountingNodes::default();
    let mut batch = Batch::new(&batched, P);
    for (key, v) in &entries {
        batch.update(key, v).unwrap();
        update(&mut one_by_one, P, key, v).unwrap();
    }
    let sealed = batch.finish().unwrap();
    let written = sealed.changed();
    let batch_root = sealed.write(&mut batched, P).unwrap();
    let mut counting_batch = Batch::new(&counted, P);
    for (key, v) in &entries {
        counting_batch.update(key, v).unwrap();
    }
    counting_batch
        .finish()
        .unwrap()
        .write(&mut counted, P)
        .unwrap();
    assert_eq!(batch_root, root_of(&entries));
    // The same records as updating one key at a time, each tile written once.
    assert_eq!(batched.0, one_by_one.0);
    assert_eq!(written, batched.0.len());
    assert_eq!(counted.puts, written);
    assert_eq!(counted.gets.get(), written);
    // 200 random keys reach about 8 levels: the root tile, its 16 children and some below.
    assert!(written > 17 && written < 200, "{written} tiles");
}

#[test]
fn a_tile_with_slots_it_cannot_have_is_corrupt() {
    let (mut nodes, _) = insert_all(&[([1; 32], value(1)), ([0x81; 32], value(2))]);
    let root_tile = tile_key(P, &[0; 32], 0);
    let bytes = nodes.0.get_mut(&root_tile).unwrap();
    bytes[0] |= 0x80; // slot 15 does not exist
    assert!(matches!(
        prove(&nodes, P, &[1; 32]),
        Err(MapError::Corrupt(_))
    ));
    let bytes = nodes.0.get_mut(&root_tile).unwrap();
    bytes[0] &= 0x7f;
    bytes[2] = 9; // not a node tag
    assert!(matches!(
        update(&mut nodes, P, &[1; 32], &value(3)),
        Err(MapError::Corrupt(_))
    ));
}

/// A store that counts what a batch asks of it.
#[derive(Default)]
struct CountingNodes {
    inner: MemoryNodes,
    gets: std::cell::Cell<usize>,
    puts: usize,
}

impl NodeRead for CountingNodes {
    type Error = Infallible;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Infallible> {
        self.gets.set(self.gets.get() + 1);
        self.inner.get(key)
    }
}

impl NodeWrite for CountingNodes {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Infallible> {
        self.puts += 1;
        self.inner.put(key, value)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any insertion order gives the root of the set, and every key proves its last value while
    /// keys never inserted prove absent.
    #[test]
    fn the_stored_map_matches_the_set(
        entries in proptest::collection::vec((any::<[u8; 32]>(), any::<u8>()), 0..120),
        absent in proptest::collection::vec(any::<[u8; 32]>(), 1..10),
        shuffle in any::<u64>(),
    ) {
        let mut order: Vec<(MapKey, Hash)> = entries.iter().map(|(k, v)| (*k, value(*v))).collect();
        // A deterministic shuffle, keeping each key's last value last.
        let mut s = shuffle;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let j = (s >> 33) as usize % (i + 1);
            if order[i].0 != order[j].0 {
                order.swap(i, j);
            }
        }
        let mut nodes = MemoryNodes::default();
        let mut root = EMPTY;
        for (key, v) in &order {
            root = update(&mut nodes, P, key, v).unwrap();
        }
        // The last value written per key is what the store holds when keys repeat in order.
        let mut last_written = BTreeMap::new();
        for (key, v) in &order {
            last_written.insert(*key, *v);
        }
        let expected_written: Vec<(MapKey, Hash)> = last_written.iter().map(|(k, v)| (*k, *v)).collect();
        prop_assert_eq!(root, root_of(&expected_written));
        for (key, v) in &expected_written {
            let (proof, proven) = prove(&nodes, P, key).unwrap();
            prop_assert_eq!(proven, root);
            prop_assert_eq!(proof.verify(&root, key), Ok(Some(*v)));
            // Depth stays near log2(n) for random keys.
            prop_assert!(proof.siblings.len() <= 40);
        }
        for key in &absent {
            if !last_written.contains_key(key) {
                let (proof, _) = prove(&nodes, P, key).unwrap();
                prop_assert_eq!(proof.verify(&root, key), Ok(None));
            }
        }
    }
}

#[test]
fn keys_parting_at_a_tile_boundary_in_one_batch() {
    // Pairs of keys equal on their first `split` bits, for splits on either side of the tile
    // boundaries at 4 and 8 bits, all in one batch.
    let mut entries = Vec::new();
    for split in [2usize, 3, 4, 5, 7, 8, 9] {
        let mut bits = vec![true; split];
        bits[0] = split % 2 == 0; // keep the pairs apart from each other near the root
        let mut a_bits = bits.clone();
        a_bits.push(false);
        let mut b_bits = bits;
        b_bits.push(true);
        let (mut a, mut b) = (key_with_bits(&a_bits), key_with_bits(&b_bits));
        a[31] = u8::try_from(split).unwrap();
        b[31] = u8::try_from(split).unwrap();
        entries.push((a, value(2 * u8::try_from(split).unwrap())));
        entries.push((b, value(2 * u8::try_from(split).unwrap() + 1)));
    }
    let mut nodes = MemoryNodes::default();
    let mut batch = Batch::new(&nodes, P);
    for (key, v) in &entries {
        batch.update(key, v).unwrap();
    }
    let root = batch.finish().unwrap().write(&mut nodes, P).unwrap();
    assert_eq!(root, root_of(&entries));
    for (key, v) in &entries {
        let (proof, proven) = prove(&nodes, P, key).unwrap();
        assert_eq!(proven, root);
        assert_eq!(proof.verify(&root, key), Ok(Some(*v)));
    }
}

#[test]
fn tiles_no_compact_tree_has_are_corrupt() {
    let leaf = Node::Leaf {
        key: [1; 32],
        value: value(1),
    };
    let inner = Node::Inner {
        left: value(2),
        right: value(3),
    };
    let encoded = |slots: &[(usize, Node)]| {
        let mut tile = Tile::EMPTY;
        for (slot, node) in slots {
            tile.slots[*slot] = Some(*node);
        }
        tile.encode()
    };
    let good = encoded(&[(0, inner), (1, leaf), (2, leaf)]);
    assert!(Tile::decode::<Infallible>(&good).is_ok());
    for bad in [
        encoded(&[]),                      // an empty subtree is never stored
        encoded(&[(0, leaf), (1, leaf)]),  // below a leaf
        encoded(&[(0, inner), (3, leaf)]), // below a gap
        encoded(&[(1, inner)]),            // no top node
    ] {
        assert!(matches!(
            Tile::decode::<Infallible>(&bad),
            Err(MapError::Corrupt(_))
        ));
    }
}

#[test]
fn a_failed_update_voids_the_batch() {
    let entries: Vec<(MapKey, Hash)> = (0..200u8)
        .map(|i| (Sha256::digest([i]).into(), value(i)))
        .collect();
    let (mut nodes, _) = insert_all(&entries);
    // Corrupt the tile at depth 4 on one key's path: an update elsewhere still works, the one
    // through that tile fails, and then the batch writes nothing at all.
    let (broken_key, _) = entries[0];
    let other = entries
        .iter()
        .map(|(k, _)| *k)
        .find(|k| k[0] >> 4 != broken_key[0] >> 4)
        .unwrap();
    let broken = tile_key(P, &broken_key, 4);
    nodes.0.get_mut(&broken).unwrap().truncate(5);
    let before = nodes.0.clone();
    let mut batch = Batch::new(&nodes, P);
    batch.update(&other, &value(1)).unwrap();
    assert!(matches!(
        batch.update(&broken_key, &value(2)),
        Err(MapError::Corrupt(_))
    ));
    assert!(matches!(
        batch.update(&other, &value(3)),
        Err(MapError::BatchFailed)
    ));
    assert!(matches!(batch.finish(), Err(MapError::BatchFailed)));
    assert_eq!(nodes.0, before);
}

/// The entries of `(key, value)` pairs where a later value of a key replaces an earlier one.
fn last_values(updates: &[(MapKey, Hash)]) -> Vec<(MapKey, Hash)> {
    let mut last = BTreeMap::new();
    for (key, v) in updates {
        last.insert(*key, *v);
    }
    last.into_iter().collect()
}

#[test]
fn a_batch_hashes_each_changed_node_once_and_agrees_with_key_by_key_updates() {
    // Keys that repeat within a batch, keys that split a leaf another update of the same batch
    // just placed, and batches on top of earlier ones.
    let mut rng_state = 7u64;
    let mut next = || {
        rng_state = rng_state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        rng_state
    };
    let mut nodes = MemoryNodes::default();
    let mut one_by_one = MemoryNodes::default();
    let mut all = Vec::new();
    for round in 0..6u8 {
        let mut batch = Batch::new(&nodes, P);
        for i in 0..150u8 {
            // Half the keys new, half repeats of earlier ones (several within this batch).
            let pick = next();
            let key: MapKey = if pick % 2 == 0 || all.is_empty() {
                Sha256::digest(pick.to_be_bytes()).into()
            } else {
                let earlier: &(MapKey, Hash) = &all[usize::try_from(pick / 2).unwrap() % all.len()];
                earlier.0
            };
            let v = Hash(Sha256::digest([round, i]).into());
            batch.update(&key, &v).unwrap();
            update(&mut one_by_one, P, &key, &v).unwrap();
            all.push((key, v));
        }
        let root = batch.finish().unwrap().write(&mut nodes, P).unwrap();
        assert_eq!(root, root_of(&last_values(&all)), "round {round}");
        assert_eq!(nodes.0, one_by_one.0, "round {round}");
    }
}

#[test]
fn a_batch_over_a_cache_reads_the_cache_first_and_writes_nothing() {
    let entries: Vec<(MapKey, Hash)> = (0..300u16)
        .map(|i| (Sha256::digest(i.to_be_bytes()).into(), Hash([1; 32])))
        .collect();
    let (first, rest) = entries.split_at(100);
    let (stored, _) = insert_all(first);
    let before = stored.0.clone();
    let mut cache = TileCache::default();
    let mut root = EMPTY;
    for chunk in rest.chunks(50) {
        let mut batch = Batch::over(&stored, P, &cache);
        for (key, v) in chunk {
            batch.update(key, v).unwrap();
        }
        let sealed = batch.finish().unwrap();
        root = sealed.into_cache(&mut cache);
    }
    // Nothing reached the store; the cache and the store together are the whole map.
    assert_eq!(stored.0, before);
    assert_eq!(root, root_of(&entries));
    for (key, v) in &entries {
        let (proof, proven) = prove_over(&stored, P, Some(&cache), key).unwrap();
        assert_eq!(proven, root);
        assert_eq!(proof.verify(&root, key), Ok(Some(*v)));
    }
    // Writing the cache out gives the store the map.
    let mut written = stored.clone();
    for (key, record) in cache.encoded(P) {
        written.put(&key, &record).unwrap();
    }
    assert_eq!(written.0, insert_all(&entries).0.0);
    let (_, proven) = prove(&written, P, &entries[0].0).unwrap();
    assert_eq!(proven, root);
    // An empty batch over the cache reports the cache's root.
    let sealed = Batch::over(&stored, P, &cache).finish().unwrap();
    assert_eq!((sealed.root(), sealed.changed()), (root, 0));
}
