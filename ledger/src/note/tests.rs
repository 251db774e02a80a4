use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::hash::Hash;

fn signer(name: &str, seed: u64) -> NoteSigner {
    NoteSigner::generate(
        KeyName::new(name).unwrap(),
        &mut StdRng::seed_from_u64(seed),
    )
}

const TEXT: &str = "hello\n\nworld\n";

#[test]
fn key_names_follow_the_spec() {
    for good in ["example.com/log", "a", "例え.jp/ログ", "x=y/z@w"] {
        assert_eq!(KeyName::new(good).unwrap().as_str(), good);
    }
    let cases = [
        ("", KeyNameProblem::Empty),
        ("a+b", KeyNameProblem::Plus),
        ("a b", KeyNameProblem::Whitespace),
        ("a\tb", KeyNameProblem::Whitespace),
        ("a\u{a0}b", KeyNameProblem::Whitespace),
        ("a\u{3000}b", KeyNameProblem::Whitespace),
        ("a\u{0}b", KeyNameProblem::Control),
        ("a\u{7f}b", KeyNameProblem::Control),
    ];
    for (bad, problem) in cases {
        assert_eq!(
            KeyName::new(bad),
            Err(NoteError::InvalidKeyName { problem }),
            "{bad:?}"
        );
    }
    let long = "a".repeat(MAX_KEY_NAME_LEN + 1);
    assert_eq!(
        KeyName::new(&long),
        Err(NoteError::InvalidKeyName {
            problem: KeyNameProblem::TooLong
        })
    );
    assert!(KeyName::new(&long[1..]).is_ok());
}

#[test]
fn keys_round_trip_through_their_text_forms() {
    let s = signer("example.com/log", 1);
    let skey = s.to_skey();
    assert!(skey.starts_with("PRIVATE+KEY+example.com/log+"));
    let again = NoteSigner::from_skey(&skey).unwrap();
    assert_eq!(again.to_skey(), skey);
    assert_eq!(again.key_id(), s.key_id());
    assert_eq!(again.verifier(), s.verifier());

    let vkey = s.verifier().to_vkey();
    assert!(vkey.starts_with(&format!("example.com/log+{:08x}+", s.key_id())));
    let v = NoteVerifier::from_vkey(&vkey).unwrap();
    assert_eq!(v, s.verifier());
    assert_eq!(v.to_vkey(), vkey);
    assert_eq!(v.name().as_str(), "example.com/log");
    assert_eq!(
        NoteVerifier::from_public_key(v.name().clone(), v.public_key()).unwrap(),
        v
    );
    // Go accepts upper-case key ids; so do we.
    let upper = vkey.replacen(
        &format!("{:08x}", v.key_id()),
        &format!("{:08X}", v.key_id()),
        1,
    );
    assert_eq!(NoteVerifier::from_vkey(&upper).unwrap(), v);
}

#[test]
fn key_id_is_the_spec_hash() {
    let s = signer("example.com/log", 2);
    let mut data = b"example.com/log\n\x01".to_vec();
    data.extend_from_slice(s.verifier().public_key());
    let digest = Hash::sha256(&data);
    let want = u32::from_be_bytes(digest.0[..4].try_into().unwrap());
    assert_eq!(s.key_id(), want);
    assert_eq!(s.verifier().key_id(), want);
}

#[test]
fn malformed_key_texts_are_rejected() {
    let s = signer("log", 3);
    let vkey = s.verifier().to_vkey();
    let name_and_id = format!("log+{:08x}", s.key_id());
    let b64 = vkey.strip_prefix(&format!("{name_and_id}+")).unwrap();
    let raw = BASE64.decode(b64).unwrap();
    let with_data = |data: &[u8]| format!("{name_and_id}+{}", BASE64.encode(data));
    let vkey_problem = |text: &str| match NoteVerifier::from_vkey(text) {
        Err(NoteError::InvalidVerifierKey { problem }) => Some(problem),
        _ => None,
    };

    let mut other_alg = raw.clone();
    other_alg[0] = 0x02;
    assert_eq!(
        vkey_problem(&with_data(&other_alg)),
        Some(KeyProblem::UnknownAlgorithm { alg: 2 })
    );
    assert_eq!(
        vkey_problem(&with_data(&raw[..32])),
        Some(KeyProblem::KeyLength { got: 31 })
    );
    assert_eq!(
        vkey_problem(&with_data(&[])),
        Some(KeyProblem::KeyLength { got: 0 })
    );
    assert_eq!(
        vkey_problem(&format!("{name_and_id}+not base64!")),
        Some(KeyProblem::Base64)
    );
    let mut other_key = raw.clone();
    other_key[5] ^= 1;
    assert!(matches!(
        vkey_problem(&with_data(&other_key)),
        Some(KeyProblem::KeyIdMismatch { .. } | KeyProblem::InvalidPublicKey)
    ));
    let other_id = format!("log+{:08x}+{b64}", s.key_id() ^ 1);
    assert!(matches!(
        vkey_problem(&other_id),
        Some(KeyProblem::KeyIdMismatch { .. })
    ));
    for text in [
        "",
        "log",
        "log+",
        &format!("log+{:07x}+{b64}", s.key_id() >> 4),
        &format!("log+0x{:06x}+{b64}", s.key_id() >> 8),
        &format!("log+{:08x}", s.key_id()),
    ] {
        assert_eq!(vkey_problem(text), Some(KeyProblem::Format), "{text:?}");
    }
    // A different name gives a different key id.
    assert!(matches!(
        vkey_problem(&vkey.replacen("log+", "lag+", 1)),
        Some(KeyProblem::KeyIdMismatch { .. })
    ));
    assert!(matches!(
        NoteVerifier::from_vkey(&vkey.replacen("log+", "l g+", 1)),
        Err(NoteError::InvalidKeyName { .. })
    ));

    // A verifier key is not a signer key and the other way round.
    assert!(NoteSigner::from_skey(&vkey).is_err());
    assert!(NoteVerifier::from_vkey(&s.to_skey()).is_err());
    let skey = s.to_skey();
    let tampered = skey.replacen("PRIVATE+KEY+log+", "PRIVATE+KEY+lag+", 1);
    assert!(matches!(
        NoteSigner::from_skey(&tampered),
        Err(NoteError::InvalidSignerKey {
            problem: KeyProblem::KeyIdMismatch { .. }
        })
    ));
}

#[test]
fn signer_debug_does_not_show_the_key() {
    let s = signer("log", 4);
    let debug = format!("{s:?}");
    let seed_b64 = s.to_skey().splitn(5, '+').nth(4).unwrap().to_owned();
    assert!(debug.contains("log"));
    assert!(!debug.contains(&seed_b64));
    assert!(!debug.contains(&hex::encode(s.key.as_bytes())));
}

#[test]
fn sign_then_open() {
    let log = signer("example.com/log", 5);
    let witness = signer("witness.example", 6);
    let note = sign_note(TEXT, &[&log, &witness]).unwrap();
    assert!(note.starts_with("hello\n\nworld\n\n\u{2014} example.com/log "));
    assert_eq!(note.matches('\u{2014}').count(), 2);

    let parsed = parse_note(&note).unwrap();
    assert_eq!(parsed.text, TEXT);
    assert_eq!(parsed.signatures.len(), 2);
    assert_eq!(parsed.signatures[0].key_id, log.key_id());
    assert_eq!(parsed.signatures[0].sig.len(), 64);
    assert_eq!(parsed.signatures[0].sig, log.sign(TEXT.as_bytes()));

    let opened = open_note(&note, &[log.verifier()]).unwrap();
    assert_eq!(opened.text, TEXT);
    assert_eq!(opened.verified_by, vec![log.name().clone()]);
    assert_eq!(opened.unverified.len(), 1);
    assert_eq!(opened.unverified[0].name, "witness.example");

    let both = open_note(&note, &[witness.verifier(), log.verifier()]).unwrap();
    assert_eq!(
        both.verified_by,
        vec![log.name().clone(), witness.name().clone()]
    );
    assert!(both.unverified.is_empty());

    // Signing is deterministic.
    assert_eq!(sign_note(TEXT, &[&log, &witness]).unwrap(), note);
}

#[test]
fn the_smallest_text_is_a_newline() {
    let log = signer("log", 7);
    let note = sign_note("\n", &[&log]).unwrap();
    assert!(note.starts_with("\n\n\u{2014} log "));
    assert_eq!(open_note(&note, &[log.verifier()]).unwrap().text, "\n");
    assert_eq!(sign_note("", &[&log]), Err(NoteError::MissingFinalNewline));
}

#[test]
fn a_text_ending_in_blank_lines_survives() {
    let log = signer("log", 8);
    let text = "a\n\n\n";
    let note = sign_note(text, &[&log]).unwrap();
    assert_eq!(open_note(&note, &[log.verifier()]).unwrap().text, text);
}

#[test]
fn tampering_is_detected() {
    let log = signer("log", 9);
    let note = sign_note(TEXT, &[&log]).unwrap();
    let known = [log.verifier()];

    let changed_text = note.replacen("world", "World", 1);
    assert_eq!(
        open_note(&changed_text, &known),
        Err(NoteError::InvalidSignature {
            name: "log".into(),
            key_id: log.key_id()
        })
    );

    // Flip each bit of the signature (after the key id) in turn.
    let parsed = parse_note(&note).unwrap();
    for byte in 0..64 {
        for bit in 0..8 {
            let mut sig = parsed.signatures[0].clone();
            sig.sig[byte] ^= 1 << bit;
            let bad = format!("{}\n{}\n", TEXT, sig.to_line());
            assert!(
                matches!(
                    open_note(&bad, &known),
                    Err(NoteError::InvalidSignature { .. })
                ),
                "byte {byte} bit {bit}"
            );
        }
    }

    // A truncated or extended signature from a known key does not verify either.
    for sig in [
        parsed.signatures[0].sig[..63].to_vec(),
        [parsed.signatures[0].sig.clone(), vec![0]].concat(),
    ] {
        let line = NoteSignature {
            sig,
            ..parsed.signatures[0].clone()
        }
        .to_line();
        assert!(matches!(
            open_note(&format!("{TEXT}\n{line}\n"), &known),
            Err(NoteError::InvalidSignature { .. })
        ));
    }

    // A wrong key id makes the signature unknown: ignored, so nothing verifies.
    let wrong_id = NoteSignature {
        key_id: log.key_id() ^ 1,
        ..parsed.signatures[0].clone()
    }
    .to_line();
    let bad = format!("{TEXT}\n{wrong_id}\n");
    assert_eq!(open_note(&bad, &known), Err(NoteError::NoVerifiedSignature));
    // The same for a wrong name with the right key id.
    let wrong_name = NoteSignature {
        name: "lag".into(),
        ..parsed.signatures[0].clone()
    }
    .to_line();
    let bad = format!("{TEXT}\n{wrong_name}\n");
    assert_eq!(open_note(&bad, &known), Err(NoteError::NoVerifiedSignature));

    // A signature by a known key that fails rejects the note even if another known key verifies.
    let other = signer("other", 10);
    let good_other = sign_note(TEXT, &[&other]).unwrap();
    let other_line = good_other.lines().last().unwrap();
    let mixed = format!("{}{other_line}\n", changed_text);
    assert!(matches!(
        open_note(&mixed, &[log.verifier(), other.verifier()]),
        Err(NoteError::InvalidSignature { .. })
    ));
}

#[test]
fn unknown_keys_only_is_rejected() {
    let log = signer("log", 11);
    let stranger = signer("stranger", 12);
    let note = sign_note(TEXT, &[&stranger]).unwrap();
    assert_eq!(
        open_note(&note, &[log.verifier()]),
        Err(NoteError::NoVerifiedSignature)
    );
    assert_eq!(open_note(&note, &[]), Err(NoteError::NoVerifiedSignature));
}

#[test]
fn duplicates_are_rejected() {
    let log = signer("log", 13);
    assert_eq!(
        sign_note(TEXT, &[&log, &log]),
        Err(NoteError::DuplicateSigner {
            name: "log".into(),
            key_id: log.key_id()
        })
    );
    let note = sign_note(TEXT, &[&log]).unwrap();
    let line = note.lines().last().unwrap();
    let twice = format!("{note}{line}\n");
    assert_eq!(
        open_note(&twice, &[log.verifier()]),
        Err(NoteError::DuplicateSignature {
            name: "log".into(),
            key_id: log.key_id()
        })
    );
    // Repeated unknown signatures are kept once.
    let stranger = signer("stranger", 14);
    let stranger_line = sign_note(TEXT, &[&stranger]).unwrap();
    let stranger_line = stranger_line.lines().last().unwrap();
    let noisy = format!("{note}{stranger_line}\n{stranger_line}\n");
    let opened = open_note(&noisy, &[log.verifier()]).unwrap();
    assert_eq!(opened.unverified.len(), 1);

    // Two different keys with the same name and id cannot both be trusted.
    let v = log.verifier();
    let forged = NoteVerifier {
        key: signer("log", 15).verifier().key,
        ..v.clone()
    };
    assert_eq!(
        open_note(&note, &[v.clone(), forged]),
        Err(NoteError::AmbiguousVerifier {
            name: "log".into(),
            key_id: v.key_id()
        })
    );
    // The same key given twice is harmless.
    assert!(open_note(&note, &[v.clone(), v]).is_ok());

    // Two keys with the same name but different ids (a key rotation) both count.
    let rotated = signer("log", 16);
    let both = sign_note(TEXT, &[&log, &rotated]).unwrap();
    let opened = open_note(&both, &[log.verifier(), rotated.verifier()]).unwrap();
    assert_eq!(opened.verified_by.len(), 2);
}

#[test]
fn signature_count_is_capped() {
    let log = signer("log", 17);
    let note = sign_note(TEXT, &[&log]).unwrap();
    let filler = NoteSignature {
        name: "filler".into(),
        key_id: 1,
        sig: vec![0; 64],
    }
    .to_line();
    let with = |extra: usize| {
        let mut n = note.clone();
        for _ in 0..extra {
            n.push_str(&filler);
            n.push('\n');
        }
        n
    };
    // Fillers are exact duplicates, kept once among the unverified.
    let ok = open_note(&with(MAX_NOTE_SIGNATURES - 1), &[log.verifier()]).unwrap();
    assert_eq!(ok.unverified.len(), 1);
    assert_eq!(
        open_note(&with(MAX_NOTE_SIGNATURES), &[log.verifier()]),
        Err(NoteError::TooManySignatures {
            max: MAX_NOTE_SIGNATURES
        })
    );
    let many: Vec<NoteSigner> = (0..=MAX_NOTE_SIGNATURES as u64)
        .map(|i| signer(&format!("k{i}"), 100 + i))
        .collect();
    let refs: Vec<&NoteSigner> = many.iter().collect();
    assert_eq!(
        sign_note(TEXT, &refs),
        Err(NoteError::TooManySignatures {
            max: MAX_NOTE_SIGNATURES
        })
    );
    assert!(sign_note(TEXT, &refs[..MAX_NOTE_SIGNATURES]).is_ok());
    assert_eq!(sign_note(TEXT, &[]), Err(NoteError::NoSigners));
}

#[test]
fn size_is_capped() {
    let log = signer("log", 18);
    let big = format!("{}\n", "a".repeat(MAX_NOTE_SIZE));
    assert!(matches!(
        sign_note(&big, &[&log]),
        Err(NoteError::NoteTooLarge { .. })
    ));
    // Text that fits but whose signed note would not.
    let almost = format!("{}\n", "a".repeat(MAX_NOTE_SIZE - 10));
    assert!(matches!(
        sign_note(&almost, &[&log]),
        Err(NoteError::NoteTooLarge { .. })
    ));
    let note = sign_note(TEXT, &[&log]).unwrap();
    let padded = format!("{}{note}", "a".repeat(MAX_NOTE_SIZE));
    assert!(matches!(
        parse_note(&padded),
        Err(NoteError::NoteTooLarge { .. })
    ));
}

#[test]
fn malformed_notes_are_rejected() {
    let log = signer("log", 19);
    let note = sign_note(TEXT, &[&log]).unwrap();
    let line = note.lines().last().unwrap().to_owned();
    let b64 = line.rsplit_once(' ').unwrap().1.to_owned();

    // No final newline after the signatures.
    assert_eq!(
        parse_note(note.trim_end_matches('\n')),
        Err(NoteError::MissingSignatures)
    );
    // No blank line at all.
    assert_eq!(
        parse_note("hello\nworld\n"),
        Err(NoteError::MissingSignatures)
    );
    // A blank line with nothing after it.
    assert_eq!(parse_note("hello\n\n"), Err(NoteError::MissingSignatures));
    // Control characters anywhere.
    for bad in [
        note.replacen("hello", "hel\rlo", 1),
        note.replacen("hello", "hel\tlo", 1),
        note.replacen("hello", "hel\u{0}lo", 1),
        format!("{}\r\n", note.trim_end()),
    ] {
        assert!(
            matches!(parse_note(&bad), Err(NoteError::InvalidCharacter { .. })),
            "{bad:?}"
        );
    }
    let text = TEXT;
    for bad_line in [
        format!("- log {b64}"),
        format!("\u{2014}log {b64}"),
        format!("\u{2014} log  {b64}"),
        format!("\u{2014} log {b64} "),
        format!("\u{2014} log+x {b64}"),
        format!("\u{2014}  {b64}"),
        "\u{2014} log".to_owned(),
        "\u{2014} log ".to_owned(),
        "\u{2014} log AAAA".to_owned(),
        "\u{2014} log AAAAAA==".to_owned(),
        format!("\u{2014} log {}", &b64[..b64.len() - 1]),
    ] {
        let bad = format!("{text}\n{bad_line}\n");
        assert_eq!(
            parse_note(&bad),
            Err(NoteError::MalformedSignatureLine { line: 1 }),
            "{bad_line:?}"
        );
    }
    // A bad second line is reported as line 2.
    let bad = format!("{note}junk\n");
    assert_eq!(
        parse_note(&bad),
        Err(NoteError::MalformedSignatureLine { line: 2 })
    );
    // sign_note rejects what parse_note would.
    assert_eq!(
        sign_note("no newline", &[&log]),
        Err(NoteError::MissingFinalNewline)
    );
    assert_eq!(
        sign_note("a\rb\n", &[&log]),
        Err(NoteError::InvalidCharacter { offset: 1 })
    );
}

#[test]
fn errors_read_well() {
    let e = NoteError::InvalidSignature {
        name: "example.com/log".into(),
        key_id: 0xab,
    };
    assert_eq!(
        e.to_string(),
        "signature by `example.com/log+000000ab` does not verify"
    );
    let e = NoteError::InvalidVerifierKey {
        problem: KeyProblem::KeyIdMismatch { got: 1, want: 2 },
    };
    assert_eq!(
        e.to_string(),
        "invalid verifier key: key id 00000001 does not match the key (00000002)"
    );
}
