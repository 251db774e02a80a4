//! Entry bundles fetched from a tile server: decoding never panics, and re-encoding what
//! decoded gives the same bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = ledger::tile::decode_entry_bundle(data) {
        assert_eq!(
            ledger::tile::encode_entry_bundle(&entries).ok().as_deref(),
            Some(data)
        );
    }
});
