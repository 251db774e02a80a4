//! Tile paths from HTTP requests (c2sp.org/tlog-tiles): parsing never panics and is canonical.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &str| {
    if let Ok(path) = ledger::tile::parse_path(data) {
        assert_eq!(path.path(), data);
    }
});
