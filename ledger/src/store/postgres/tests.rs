use super::*;

fn kv(key: &str, value: &str) -> KeyValue {
    (key.as_bytes().to_vec(), shared(value.as_bytes().to_vec()))
}

fn write(key: &str, value: Option<&str>) -> (Vec<u8>, Option<Arc<[u8]>>) {
    (
        key.as_bytes().to_vec(),
        value.map(|v| Arc::from(v.as_bytes())),
    )
}

fn keys(merged: &[KeyValue]) -> Vec<String> {
    merged
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )
        })
        .collect()
}

#[test]
fn writes_win_over_rows_and_deletes_remove_them() {
    let rows = vec![kv("a", "1"), kv("b", "1"), kv("d", "1")];
    let writes: Layer = [
        write("b", Some("2")),
        write("c", Some("2")),
        write("d", None),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        keys(&merge(rows, writes, None, None)),
        ["a=1", "b=2", "c=2"]
    );
}

#[test]
fn writes_beyond_the_rows_fetched_are_left_out() {
    // The rows stop at "c" because of the limit: "e" cannot be placed against rows not fetched.
    let rows = vec![kv("a", "1"), kv("c", "1")];
    let writes: Layer = [write("b", Some("2")), write("e", Some("2"))]
        .into_iter()
        .collect();
    assert_eq!(
        keys(&merge(rows.clone(), writes.clone(), None, Some(b"c"))),
        ["a=1", "b=2", "c=1"]
    );
    // Fetched from the top down to "c": "a" cannot be placed against rows not fetched.
    let rows = vec![kv("c", "1"), kv("e", "1")];
    let writes: Layer = [write("a", Some("2")), write("d", Some("2"))]
        .into_iter()
        .collect();
    assert_eq!(
        keys(&merge(rows, writes, Some(b"c"), None)),
        ["c=1", "d=2", "e=1"]
    );
}

#[test]
fn the_newer_layer_wins_in_the_overlay() {
    let mut overlay = Overlay {
        committing: Arc::new([write("a", Some("old")), write("b", Some("old"))].into()),
        ..Overlay::default()
    };
    overlay
        .pending
        .extend([write("a", None), write("c", Some("new"))]);
    assert_eq!(overlay.get(b"a"), Some(None));
    assert_eq!(overlay.get(b"b").flatten().as_deref(), Some(&b"old"[..]));
    assert_eq!(overlay.get(b"z"), None);
    let range = overlay.range((Bound::Included(&b"a"[..]), Bound::Excluded(&b"c"[..])));
    assert_eq!(range.len(), 2);
    assert_eq!(range.get(&b"a"[..]), Some(&None));
}

#[test]
fn only_postgres_urls_name_the_postgres_store() {
    assert!(is_postgres_url("postgres://db.example/akashi"));
    assert!(is_postgres_url("postgresql:///akashi?host=/run/postgresql"));
    assert!(!is_postgres_url("./akashi-data"));
    assert!(!is_postgres_url("postgres"));
}
