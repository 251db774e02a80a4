use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::hash::hash_leaf;
use crate::note::{KeyName, open_note, sign_note};

/// The opening example of c2sp.org/tlog-checkpoint (its key is not published).
const C2SP_EXAMPLE: &str = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";

fn signer(name: &str, seed: u64) -> NoteSigner {
    NoteSigner::generate(
        KeyName::new(name).unwrap(),
        &mut StdRng::seed_from_u64(seed),
    )
}

fn sample() -> Checkpoint {
    Checkpoint::new("example.com/log", TreeSize(42), hash_leaf(b"root"))
}

#[test]
fn the_c2sp_example_body_parses() {
    let note = crate::note::parse_note(C2SP_EXAMPLE).unwrap();
    let cp = Checkpoint::parse(&note.text).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, TreeSize(20_852_163));
    assert_eq!(
        BASE64.encode(cp.root.0),
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    );
    assert!(cp.extensions.is_empty());
    assert_eq!(cp.to_text(), note.text);
    // The log signs with its origin as key name.
    assert_eq!(note.signatures[0].name, cp.origin);
}

#[test]
fn text_round_trips() {
    let mut cp = sample();
    let text = cp.to_text();
    assert_eq!(
        text,
        format!("example.com/log\n42\n{}\n", BASE64.encode(cp.root.0))
    );
    assert_eq!(Checkpoint::parse(&text).unwrap(), cp);

    cp.extensions = vec!["ext one".into(), "\u{2014} two".into()];
    let text = cp.to_text();
    assert!(text.ends_with("\next one\n\u{2014} two\n"));
    assert_eq!(Checkpoint::parse(&text).unwrap(), cp);

    for size in [0, 1, 9, 10, u64::MAX] {
        let cp = Checkpoint::new("o", TreeSize(size), crate::hash::empty_root());
        assert_eq!(Checkpoint::parse(&cp.to_text()).unwrap(), cp);
    }
}

#[test]
fn malformed_text_is_rejected() {
    let root = BASE64.encode(hash_leaf(b"root").0);
    let parse = |text: String| Checkpoint::parse(&text);
    for size in [
        "01",
        "00",
        "+1",
        "-1",
        " 1",
        "1 ",
        "0x10",
        "1e3",
        "18446744073709551616",
        "",
    ] {
        let got = parse(format!("o\n{size}\n{root}\n"));
        assert!(
            matches!(
                got,
                Err(CheckpointError::InvalidSize | CheckpointError::EmptyLine { line: 2 })
            ),
            "{size:?}: {got:?}"
        );
    }
    let short = BASE64.encode([7u8; 31]);
    let long = BASE64.encode([7u8; 33]);
    let unpadded = root.trim_end_matches('=').to_owned();
    // Same bytes but with non-zero trailing bits: not canonical.
    let mut stray = root.clone();
    stray.replace_range(42..43, "J");
    let url_safe = root.replace('/', "_").replace('+', "-");
    for bad_root in [short, long, unpadded, stray, url_safe, "!".into()] {
        if bad_root == root {
            continue;
        }
        assert_eq!(
            parse(format!("o\n1\n{bad_root}\n")),
            Err(CheckpointError::InvalidRoot),
            "{bad_root:?}"
        );
    }
    assert_eq!(
        parse(format!("\n1\n{root}\n")),
        Err(CheckpointError::EmptyLine { line: 1 })
    );
    assert_eq!(
        parse(format!("o\n1\n{root}\next\n\nmore\n")),
        Err(CheckpointError::EmptyLine { line: 5 })
    );
    assert_eq!(
        parse(format!("o\n1\n{root}\n\n")),
        Err(CheckpointError::EmptyLine { line: 4 })
    );
    assert_eq!(
        parse(format!("o\n1\n{root}")),
        Err(CheckpointError::MissingFinalNewline)
    );
    assert_eq!(parse("o\n1\n".into()), Err(CheckpointError::MissingLines));
    assert_eq!(
        parse(String::new()),
        Err(CheckpointError::MissingFinalNewline)
    );
    assert_eq!(
        parse(format!("o\r\n1\n{root}\n")),
        Err(CheckpointError::InvalidCharacter { offset: 1 })
    );
    let many: String = (0..=MAX_CHECKPOINT_EXTENSIONS)
        .map(|i| format!("e{i}\n"))
        .collect();
    assert!(matches!(
        parse(format!("o\n1\n{root}\n{many}")),
        Err(CheckpointError::TooManyExtensions { .. })
    ));
    let most: String = (0..MAX_CHECKPOINT_EXTENSIONS)
        .map(|i| format!("e{i}\n"))
        .collect();
    let cp = parse(format!("o\n1\n{root}\n{most}")).unwrap();
    assert_eq!(cp.extensions.len(), MAX_CHECKPOINT_EXTENSIONS);
    let big = format!("{}\n1\n{root}\n", "o".repeat(MAX_NOTE_SIZE));
    assert!(matches!(parse(big), Err(CheckpointError::TooLarge { .. })));
}

#[test]
fn sign_and_verify() {
    let log = signer("example.com/log", 1);
    let signed = SignedCheckpoint::sign(sample(), &log).unwrap();
    assert!(signed.note.starts_with(&sample().to_text()));
    let verified = SignedCheckpoint::verify(&signed.note, &log.verifier()).unwrap();
    assert_eq!(verified, signed);
    assert_eq!(verified.checkpoint, sample());

    // A witness cosignature (an unknown key to this verifier) is ignored.
    let witness = signer("witness.example", 2);
    let cosigned = sign_note(&sample().to_text(), &[&log, &witness]).unwrap();
    let verified = SignedCheckpoint::verify(&cosigned, &log.verifier()).unwrap();
    assert_eq!(verified.checkpoint, sample());
    assert_eq!(verified.note, cosigned);
}

#[test]
fn verify_rejects_wrong_keys_and_tampering() {
    let log = signer("example.com/log", 3);
    let signed = SignedCheckpoint::sign(sample(), &log).unwrap();

    let impostor = signer("example.com/log", 4);
    assert_eq!(
        SignedCheckpoint::verify(&signed.note, &impostor.verifier()),
        Err(CheckpointError::Note(NoteError::NoVerifiedSignature))
    );
    let bigger = signed.note.replacen("\n42\n", "\n43\n", 1);
    assert!(matches!(
        SignedCheckpoint::verify(&bigger, &log.verifier()),
        Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
    ));
    assert!(SignedCheckpoint::verify(&signed.checkpoint.to_text(), &log.verifier()).is_err());
}

#[test]
fn origin_must_be_the_key_name() {
    let log = signer("example.com/log", 5);
    let other = Checkpoint::new("example.com/other", TreeSize(1), hash_leaf(b"x"));
    match SignedCheckpoint::sign(other.clone(), &log) {
        Err(err) => assert_eq!(
            err,
            CheckpointError::OriginMismatch {
                origin: "example.com/other".into(),
                key_name: "example.com/log".into()
            }
        ),
        got => panic!("expected an origin mismatch, got {got:?}"),
    }
    // A note for another origin, validly signed by the log key, is still refused.
    let note = sign_note(&other.to_text(), &[&log]).unwrap();
    assert!(open_note(&note, &[log.verifier()]).is_ok());
    assert!(matches!(
        SignedCheckpoint::verify(&note, &log.verifier()),
        Err(CheckpointError::OriginMismatch { .. })
    ));
}

#[test]
fn sign_refuses_fields_that_do_not_encode() {
    let log = signer("log", 6);
    let cases = [
        (
            Checkpoint::new("log\n7", TreeSize(1), hash_leaf(b"x")),
            CheckpointError::InvalidRoot,
        ),
        (
            Checkpoint::new("", TreeSize(1), hash_leaf(b"x")),
            CheckpointError::EmptyLine { line: 1 },
        ),
        (
            Checkpoint {
                extensions: vec![String::new()],
                ..Checkpoint::new("log", TreeSize(1), hash_leaf(b"x"))
            },
            CheckpointError::EmptyLine { line: 4 },
        ),
        (
            Checkpoint {
                extensions: vec!["a\nb".into()],
                ..Checkpoint::new("log", TreeSize(1), hash_leaf(b"x"))
            },
            CheckpointError::NotCanonical,
        ),
    ];
    for (cp, expected) in cases {
        match SignedCheckpoint::sign(cp.clone(), &log) {
            Err(err) => assert_eq!(err, expected, "{cp:?}"),
            Ok(_) => panic!("signed {cp:?}"),
        }
    }
}

#[test]
fn display_names_the_origin() {
    assert_eq!(
        sample().to_string(),
        format!(
            "checkpoint of `example.com/log` at size 42 with root {}",
            hash_leaf(b"root")
        )
    );
}
