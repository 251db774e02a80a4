use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn attr(name: &str, value: &str) -> (AttrName, AttrValue) {
    (AttrName::new(name).unwrap(), AttrValue::new(value).unwrap())
}

fn sample() -> Leaf {
    Leaf::new(
        EntryKind::new("decision").unwrap(),
        Day::new(2025, 3, 14).unwrap(),
        vec![
            attr("recipient", "org-123"),
            attr("purpose", "research"),
            attr("effect", "allow"),
        ],
        Hash::sha256(b"body"),
    )
    .unwrap()
}

#[test]
fn encoding_is_the_documented_text() {
    let leaf = sample();
    let want = format!(
        "akashi/v1 decision\nday 2025-03-14\nrecipient org-123\npurpose research\neffect allow\nbody {}\n",
        Hash::sha256(b"body").to_hex()
    );
    assert_eq!(String::from_utf8(leaf.encode()).unwrap(), want);
    assert_eq!(Leaf::decode(want.as_bytes()).unwrap(), leaf);
    assert_eq!(leaf.leaf_hash(), crate::hash::hash_leaf(want.as_bytes()));
    assert_eq!(leaf.attribute("purpose"), Some("research"));
    assert_eq!(leaf.attribute("missing"), None);
    assert_eq!(leaf.attribute("day"), None);
}

#[test]
fn a_leaf_without_attributes_round_trips() {
    let leaf = Leaf::new(
        EntryKind::new("policy.activate").unwrap(),
        Day::new(1970, 1, 1).unwrap(),
        vec![],
        Hash::default(),
    )
    .unwrap();
    let bytes = leaf.encode();
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        format!(
            "akashi/v1 policy.activate\nday 1970-01-01\nbody {}\n",
            "0".repeat(64)
        )
    );
    assert_eq!(Leaf::decode(&bytes).unwrap(), leaf);
}

#[test]
fn names_kinds_and_values_are_validated() {
    for good in [
        "a",
        "consent.grant",
        "consent.opt_out",
        "x-1.2",
        &"k".repeat(64),
    ] {
        assert!(EntryKind::new(good).is_ok(), "{good}");
    }
    for bad in ["", "A", "a b", "a:b", "a/b", "é", &"k".repeat(65)] {
        assert!(
            matches!(EntryKind::new(bad), Err(EntryError::InvalidKind { .. })),
            "{bad}"
        );
    }
    for good in [
        "a",
        "recipient-class",
        "recipient_class",
        "x1",
        &"n".repeat(32),
    ] {
        assert!(AttrName::new(good).is_ok(), "{good}");
    }
    for bad in ["", "A", "a.b", "a b", "a:b", &"n".repeat(33)] {
        assert!(
            matches!(AttrName::new(bad), Err(EntryError::InvalidAttrName { .. })),
            "{bad}"
        );
    }
    for reserved in ["day", "body"] {
        assert_eq!(
            AttrName::new(reserved),
            Err(EntryError::ReservedAttrName {
                name: reserved.into()
            })
        );
    }
    for good in ["x", "!~", "a:b/c?d=e&f", &"v".repeat(256)] {
        assert!(AttrValue::new(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        " ",
        "a b",
        "a\tb",
        "a\nb",
        "\u{7f}",
        "é",
        &"v".repeat(257),
    ] {
        assert!(
            matches!(
                AttrValue::new(bad),
                Err(EntryError::InvalidAttrValue { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn leaf_rules_are_enforced() {
    let base = sample();
    let dup = Leaf {
        attributes: vec![attr("a", "1"), attr("b", "2"), attr("a", "3")],
        ..base.clone()
    };
    assert_eq!(
        dup.validate(),
        Err(EntryError::DuplicateAttribute { name: "a".into() })
    );
    assert!(matches!(
        Leaf::decode(&dup.encode()),
        Err(EntryError::DuplicateAttribute { .. })
    ));

    let many = Leaf {
        attributes: (0..=MAX_ATTRIBUTES)
            .map(|i| attr(&format!("a{i}"), "1"))
            .collect(),
        ..base.clone()
    };
    assert_eq!(
        many.validate(),
        Err(EntryError::TooManyAttributes {
            got: MAX_ATTRIBUTES + 1,
            max: MAX_ATTRIBUTES
        })
    );
    assert!(matches!(
        Leaf::decode(&many.encode()),
        Err(EntryError::TooManyAttributes { .. })
    ));
    let most = Leaf {
        attributes: (0..MAX_ATTRIBUTES)
            .map(|i| attr(&format!("a{i}"), "1"))
            .collect(),
        ..base.clone()
    };
    assert_eq!(Leaf::decode(&most.encode()).unwrap(), most);

    // 32 attributes of the longest names and values do not fit in a leaf.
    let huge = Leaf {
        attributes: (0..MAX_ATTRIBUTES)
            .map(|i| attr(&format!("{i:0>32}"), &"v".repeat(MAX_ATTR_VALUE_LEN)))
            .collect(),
        ..base.clone()
    };
    let size = huge.encode().len();
    assert!(size > MAX_LEAF_SIZE);
    assert_eq!(
        huge.validate(),
        Err(EntryError::LeafTooLarge {
            size,
            max: MAX_LEAF_SIZE
        })
    );
    assert!(matches!(
        Leaf::decode(&huge.encode()),
        Err(EntryError::LeafTooLarge { .. })
    ));

    let bad_day = Leaf {
        day: Day {
            year: 2023,
            month: 2,
            day: 29,
        },
        ..base
    };
    assert_eq!(bad_day.validate(), Err(EntryError::InvalidDay));
    assert_eq!(Leaf::decode(&bad_day.encode()), Err(EntryError::InvalidDay));
}

#[test]
fn encoded_len_is_exact() {
    for leaf in [
        sample(),
        Leaf {
            attributes: vec![],
            ..sample()
        },
    ] {
        assert_eq!(leaf.encoded_len(), leaf.encode().len());
    }
}

#[test]
fn decode_is_strict() {
    let good = String::from_utf8(sample().encode()).unwrap();
    let hex = Hash::sha256(b"body").to_hex();
    let mut bad: Vec<Vec<u8>> = [
        good.replacen("akashi/v1", "akashi/v2", 1),
        good.replacen("akashi/v1 ", "akashi/v1  ", 1),
        good.replacen("akashi/v1 ", "Akashi/v1 ", 1),
        good.replacen("day ", "day  ", 1),
        good.replacen("day 2025-03-14", "day 2025-3-14", 1),
        good.replacen("day 2025-03-14", "day 2025-02-30", 1),
        good.replacen("recipient org-123", "recipient  org-123", 1),
        good.replacen("recipient org-123", "recipient org 123", 1),
        good.replacen("recipient org-123", "recipient", 1),
        good.replacen("recipient org-123", "Recipient org-123", 1),
        good.replacen("recipient org-123", "day 2025-03-14", 1),
        good.replacen("recipient org-123\n", "", 1)
            .replacen("effect", "purpose", 1),
        good.replacen(&hex, &hex.to_uppercase(), 1),
        good.replacen(&hex, &hex[..63], 1),
        good.replacen(&hex, &format!("{hex}0"), 1),
        good.replacen("body ", "body  ", 1),
        good.replacen("body ", "commitment ", 1),
        good.replacen('\n', "\r\n", 1),
        good.trim_end().to_owned(),
        format!("{good}\n"),
        format!("{good}extra 1\n"),
        format!("\n{good}"),
        good.replacen("day 2025-03-14\n", "", 1),
        good.replacen(&format!("body {hex}\n"), "", 1),
        format!("akashi/v1 decision\nrecipient org-123\nday 2025-03-14\nbody {hex}\n"),
        String::new(),
        "\n".into(),
        format!("akashi/v1 decision\nbody {hex}\n"),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    bad.push(vec![0xff; 10]);
    let mut not_utf8 = good.clone().into_bytes();
    not_utf8[20] = 0xc3;
    bad.push(not_utf8);

    for bytes in bad {
        assert!(
            Leaf::decode(&bytes).is_err(),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert!(matches!(
        Leaf::decode(&vec![b'a'; MAX_LEAF_SIZE + 1]),
        Err(EntryError::LeafTooLarge { .. })
    ));
}

#[test]
fn days_parse_validate_and_print() {
    for (text, ok) in [
        ("2024-02-29", true),
        ("2000-02-29", true),
        ("1900-02-29", false),
        ("2023-02-29", false),
        ("2023-04-31", false),
        ("2023-12-31", true),
        ("2023-13-01", false),
        ("2023-00-10", false),
        ("2023-01-00", false),
        ("0000-01-01", true),
        ("9999-12-31", true),
        ("2023-1-01", false),
        ("2023/01/01", false),
        ("+023-01-01", false),
        ("2023-01-01 ", false),
        ("20230101", false),
        ("", false),
    ] {
        let got = Day::parse(text);
        assert_eq!(got.is_ok(), ok, "{text}");
        if let Ok(day) = got {
            assert_eq!(day.to_string(), text);
        }
    }
    assert_eq!(Day::new(10_000, 1, 1), Err(EntryError::InvalidDay));
}

#[test]
fn days_from_unix_time() {
    let day = |s| Day::from_unix_seconds(s).unwrap().to_string();
    assert_eq!(day(0), "1970-01-01");
    assert_eq!(day(86_399), "1970-01-01");
    assert_eq!(day(86_400), "1970-01-02");
    assert_eq!(day(-1), "1969-12-31");
    assert_eq!(day(951_782_400), "2000-02-29");
    assert_eq!(day(1_709_164_800), "2024-02-29");
    assert_eq!(day(1_741_910_400), "2025-03-14");
    assert_eq!(day(253_402_300_799), "9999-12-31");
    assert_eq!(day(-62_167_219_200), "0000-01-01");
    for bad in [253_402_300_800, -62_167_219_201, i64::MAX, i64::MIN] {
        assert_eq!(
            Day::from_unix_seconds(bad),
            Err(EntryError::DayOutOfRange { seconds: bad })
        );
    }
    assert_eq!(
        Day::parse("2025-03-14").unwrap().to_unix_seconds(),
        1_741_910_400
    );
}

#[test]
fn bodies_commit_to_their_bytes() {
    let mut rng = StdRng::seed_from_u64(1);
    let body = Body::new(b"patient data".to_vec(), &mut rng);
    let other = Body::new(b"patient data".to_vec(), &mut rng);
    assert_ne!(body.nonce, other.nonce, "fresh nonce per body");
    assert_ne!(body.commitment(), other.commitment());

    let bytes = body.encode();
    assert_eq!(bytes.len(), BODY_NONCE_LEN + 12);
    assert_eq!(&bytes[..BODY_NONCE_LEN], &body.nonce);
    assert_eq!(Body::decode(&bytes).unwrap(), body);
    assert_eq!(body.commitment(), Hash::sha256(&bytes));

    let leaf = Leaf {
        commitment: body.commitment(),
        ..sample()
    };
    verify_commitment(&leaf, &bytes).unwrap();
    let mut tampered = bytes.clone();
    tampered[BODY_NONCE_LEN] ^= 1;
    assert_eq!(
        verify_commitment(&leaf, &tampered),
        Err(EntryError::CommitmentMismatch)
    );
    assert_eq!(
        verify_commitment(&leaf, &other.encode()),
        Err(EntryError::CommitmentMismatch)
    );
    assert_eq!(
        verify_commitment(&leaf, &bytes[..5]),
        Err(EntryError::BodyTooShort { size: 5 })
    );

    // An empty payload is a valid body; anything shorter than the nonce is not.
    let empty = Body::new(Vec::new(), &mut rng);
    assert_eq!(Body::decode(&empty.encode()).unwrap(), empty);
    assert_eq!(
        Body::decode(&[0; BODY_NONCE_LEN - 1]),
        Err(EntryError::BodyTooShort {
            size: BODY_NONCE_LEN - 1
        })
    );
}

#[test]
fn body_size_is_capped() {
    let mut rng = StdRng::seed_from_u64(2);
    let max = vec![0u8; MAX_BODY_SIZE];
    let body = Body::try_new(max, &mut rng).unwrap();
    assert_eq!(Body::decode(&body.encode()).unwrap(), body);
    assert!(matches!(
        Body::try_new(vec![0u8; MAX_BODY_SIZE + 1], &mut rng),
        Err(EntryError::BodyTooLarge { .. })
    ));
    let too_big = vec![0u8; BODY_NONCE_LEN + MAX_BODY_SIZE + 1];
    assert!(matches!(
        Body::decode(&too_big),
        Err(EntryError::BodyTooLarge { .. })
    ));
    assert!(matches!(
        verify_commitment(&sample(), &too_big),
        Err(EntryError::BodyTooLarge { .. })
    ));
}

#[test]
fn body_debug_hides_the_payload() {
    let body = Body::new(b"secret-patient-id".to_vec(), &mut StdRng::seed_from_u64(3));
    let debug = format!("{body:?}");
    assert!(!debug.contains("secret"));
    assert!(!debug.contains(&format!("{:?}", b"secret-patient-id")));
    assert!(debug.contains("17"));
}

#[test]
fn errors_do_not_echo_values() {
    let err = AttrValue::new("patient 12345").unwrap_err();
    assert!(!err.to_string().contains("12345"));
    let err = EntryKind::new("Patient-12345").unwrap_err();
    assert!(!err.to_string().contains("12345"));
}

fn arb_leaf() -> impl Strategy<Value = Leaf> {
    (
        "[a-z0-9.-]{1,64}",
        0u16..=9999,
        1u8..=12,
        1u8..=28,
        proptest::collection::btree_map("[a-z0-9-]{1,12}", "[!-~]{1,40}", 0..12),
        any::<[u8; 32]>(),
    )
        .prop_filter_map("reserved names", |(kind, y, m, d, attrs, commitment)| {
            let attributes = attrs
                .into_iter()
                .map(|(n, v)| Some((AttrName::new(&n).ok()?, AttrValue::new(&v).ok()?)))
                .collect::<Option<Vec<_>>>()?;
            Leaf::new(
                EntryKind::new(&kind).ok()?,
                Day::new(y, m, d).ok()?,
                attributes,
                Hash(commitment),
            )
            .ok()
        })
}

proptest! {
    #[test]
    fn valid_leaves_round_trip(leaf in arb_leaf()) {
        let bytes = leaf.encode();
        prop_assert_eq!(Leaf::decode(&bytes), Ok(leaf));
    }

    #[test]
    fn any_accepted_bytes_are_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(leaf) = Leaf::decode(&bytes) {
            prop_assert_eq!(leaf.encode(), bytes);
        }
    }

    #[test]
    fn mutated_leaves_never_decode_to_the_same_leaf(
        leaf in arb_leaf(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = leaf.encode();
        let i = pos.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        if let Ok(other) = Leaf::decode(&bytes) {
            prop_assert_ne!(&other, &leaf);
            prop_assert_eq!(other.encode(), bytes);
        }
    }

    #[test]
    fn unix_days_round_trip(days in -719_528i64..=2_932_896) {
        let day = Day::from_unix_seconds(days * 86_400 + 12_345).unwrap();
        prop_assert!(day.is_valid());
        prop_assert_eq!(day.to_unix_seconds(), days * 86_400);
        prop_assert_eq!(Day::parse(&day.to_string()), Ok(day));
    }
}
