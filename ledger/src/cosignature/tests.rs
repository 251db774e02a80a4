use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::{Digest as _, Sha256};

use super::*;
use crate::checkpoint::Checkpoint;
use crate::hash::{Hash, TreeSize};
use crate::note::NoteSigner;

const ORIGIN: &str = "example.com/log";

fn log_signer() -> NoteSigner {
    NoteSigner::from_seed(KeyName::new(ORIGIN).unwrap(), &[1u8; 32])
}

fn witness(name: &str, seed: u8) -> WitnessSigner {
    WitnessSigner::from_seed(KeyName::new(name).unwrap(), &[seed; 32])
}

fn checkpoint(size: u64) -> SignedCheckpoint {
    let cp = Checkpoint::new(ORIGIN, TreeSize(size), Hash::sha256(&size.to_be_bytes()));
    SignedCheckpoint::sign(cp, &log_signer()).unwrap()
}

#[test]
fn keys_round_trip_with_signature_type_four() {
    let w = WitnessSigner::generate(
        KeyName::new("witness.example/w1").unwrap(),
        &mut StdRng::seed_from_u64(3),
    );
    let skey = w.to_skey();
    assert!(skey.starts_with("PRIVATE+KEY+witness.example/w1+"));
    let again = WitnessSigner::from_skey(&skey).unwrap();
    assert_eq!(again.verifier(), w.verifier());

    let vkey = w.verifier().to_vkey();
    let data = BASE64.decode(vkey.splitn(3, '+').nth(2).unwrap()).unwrap();
    assert_eq!(data.len(), 33);
    assert_eq!(data[0], ALG_COSIGNATURE_V1);
    assert_eq!(WitnessVerifier::from_vkey(&vkey).unwrap(), w.verifier());

    // The key id is SHA-256(name || "\n" || 0x04 || key)[:4] (c2sp.org/tlog-cosignature).
    let mut h = Sha256::new();
    h.update(b"witness.example/w1\n\x04");
    h.update(&data[1..]);
    let want = u32::from_be_bytes(h.finalize()[..4].try_into().unwrap());
    assert_eq!(w.verifier().key_id(), want);
    assert!(vkey.starts_with(&format!("witness.example/w1+{want:08x}+")));
}

#[test]
fn log_and_witness_keys_are_not_interchangeable() {
    let log_vkey = log_signer().verifier().to_vkey();
    assert_eq!(
        WitnessVerifier::from_vkey(&log_vkey),
        Err(NoteError::InvalidVerifierKey {
            problem: KeyProblem::UnknownAlgorithm { alg: 0x01 }
        })
    );
    let witness_vkey = witness("w", 2).verifier().to_vkey();
    assert_eq!(
        NoteVerifier::from_vkey(&witness_vkey),
        Err(NoteError::InvalidVerifierKey {
            problem: KeyProblem::UnknownAlgorithm { alg: 0x04 }
        })
    );
    assert!(matches!(
        WitnessSigner::from_skey(&log_signer().to_skey()),
        Err(NoteError::InvalidSignerKey {
            problem: KeyProblem::UnknownAlgorithm { alg: 0x01 }
        })
    ));
    // A key id computed with the note type byte does not match a witness key.
    let w = witness("w", 2);
    let wrong_id = key_id(w.name(), 0x01, w.verifier().key.as_bytes());
    let data = BASE64.encode(key_data(ALG_COSIGNATURE_V1, w.verifier().key.as_bytes()));
    assert_eq!(
        WitnessVerifier::from_vkey(&format!("w+{wrong_id:08x}+{data}")),
        Err(NoteError::InvalidVerifierKey {
            problem: KeyProblem::KeyIdMismatch {
                got: wrong_id,
                want: w.verifier().key_id()
            }
        })
    );
}

#[test]
fn the_signed_message_is_the_spec_example() {
    // c2sp.org/tlog-cosignature §Ed25519 signed message, verbatim.
    let text =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    assert_eq!(
        signed_message(text, 1_679_315_147),
        "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    );
    assert_eq!(signed_message("x\n", 0), "cosignature/v1\ntime 0\nx\n");
}

#[test]
fn a_cosignature_line_is_key_id_timestamp_and_signature() {
    let w = witness("witness.example/w1", 9);
    let cp = checkpoint(5);
    let sig = w.cosign(&cp, 1_679_315_147).unwrap();
    let line = sig.to_line();
    let (prefix, b64) = line.rsplit_once(' ').unwrap();
    assert_eq!(prefix, "\u{2014} witness.example/w1");
    let data = BASE64.decode(b64).unwrap();
    assert_eq!(data.len(), 4 + 8 + 64);
    assert_eq!(data[..4], w.verifier().key_id().to_be_bytes());
    assert_eq!(data[4..12], 1_679_315_147u64.to_be_bytes());
    // The Ed25519 signature is over the spec's message, checked here with the raw key.
    let msg = signed_message(&cp.checkpoint().to_text(), 1_679_315_147);
    let ed = ed25519_dalek::Signature::from_slice(&data[12..]).unwrap();
    w.verifier().key.verify_strict(msg.as_bytes(), &ed).unwrap();
    assert_eq!(w.verifier().verify(&cp, &sig), Ok(1_679_315_147));
    // Deterministic: the same key, checkpoint and time give the same line.
    assert_eq!(w.cosign(&cp, 1_679_315_147).unwrap().to_line(), line);
}

#[test]
fn tampered_cosignatures_are_rejected() {
    let w = witness("w1", 9);
    let v = w.verifier();
    let cp = checkpoint(5);
    let good = w.cosign(&cp, 100).unwrap();

    let mut later = good.clone();
    later.sig[11] ^= 1; // the timestamp is signed
    assert_eq!(
        v.verify(&cp, &later),
        Err(CosignatureError::InvalidCosignature {
            name: "w1".into(),
            key_id: v.key_id()
        })
    );
    let mut flipped = good.clone();
    flipped.sig[40] ^= 0x80;
    assert!(matches!(
        v.verify(&cp, &flipped),
        Err(CosignatureError::InvalidCosignature { .. })
    ));
    // The same cosignature on another checkpoint.
    assert!(matches!(
        v.verify(&checkpoint(6), &good),
        Err(CosignatureError::InvalidCosignature { .. })
    ));
    let mut short = good.clone();
    short.sig.truncate(71);
    assert_eq!(
        v.verify(&cp, &short),
        Err(CosignatureError::MalformedCosignature {
            name: "w1".into(),
            len: 71
        })
    );
    let mut long = good.clone();
    long.sig.push(0);
    assert!(matches!(
        v.verify(&cp, &long),
        Err(CosignatureError::MalformedCosignature { len: 73, .. })
    ));
    let mut huge = good.clone();
    huge.sig[0] = 0x80;
    assert_eq!(
        v.verify(&cp, &huge),
        Err(CosignatureError::TimestampTooLarge {
            timestamp: u64::from_be_bytes(huge.sig[..8].try_into().unwrap())
        })
    );
    let other = witness("w2", 10).cosign(&cp, 100).unwrap();
    assert!(matches!(
        v.verify(&cp, &other),
        Err(CosignatureError::OtherKey { .. })
    ));
    assert_eq!(
        w.cosign(&cp, MAX_TIMESTAMP + 1),
        Err(CosignatureError::TimestampTooLarge {
            timestamp: MAX_TIMESTAMP + 1
        })
    );
    assert!(w.cosign(&cp, MAX_TIMESTAMP).is_ok());
}

#[test]
fn a_witnessed_checkpoint_counts_valid_cosignatures_and_ignores_unknown_lines() {
    let (w1, w2, stranger) = (witness("w1", 1), witness("w2", 2), witness("w3", 3));
    let cp = checkpoint(7);
    let note = append_signatures(
        cp.note(),
        &[
            w1.cosign(&cp, 10).unwrap(),
            stranger.cosign(&cp, 11).unwrap(),
            // An unknown key's line that would not verify under anyone: ignored all the same.
            NoteSignature {
                name: "mldsa.example".into(),
                key_id: 7,
                sig: vec![0; 2428],
            },
            w2.cosign(&cp, 12).unwrap(),
        ],
    );
    let log = log_signer().verifier();
    let witnesses = [w1.verifier(), w2.verifier()];
    let witnessed = WitnessedCheckpoint::verify(&note, &log, &witnesses).unwrap();
    assert_eq!(witnessed.note(), note);
    assert_eq!(witnessed.signed().checkpoint(), cp.checkpoint());
    let names: Vec<_> = witnessed
        .cosignatures()
        .iter()
        .map(|c| (c.witness().as_str(), c.timestamp()))
        .collect();
    assert_eq!(names, [("w1", 10), ("w2", 12)]);
    assert_eq!(witnessed.require_quorum(2), Ok(()));
    assert_eq!(
        witnessed.require_quorum(3),
        Err(CosignatureError::NoQuorum { got: 2, want: 3 })
    );
    // Only the witnesses one trusts count.
    let only_w1 = WitnessedCheckpoint::verify(&note, &log, &[w1.verifier()]).unwrap();
    assert_eq!(
        only_w1.require_quorum(2),
        Err(CosignatureError::NoQuorum { got: 1, want: 2 })
    );
    // The log's own checkpoint, with no cosignature, has none.
    let bare = WitnessedCheckpoint::verify(cp.note(), &log, &witnesses).unwrap();
    assert!(bare.cosignatures().is_empty());
}

#[test]
fn a_witnessed_checkpoint_rejects_bad_cosignatures_by_known_witnesses() {
    let (w1, w2) = (witness("w1", 1), witness("w2", 2));
    let cp = checkpoint(7);
    let log = log_signer().verifier();
    let witnesses = [w1.verifier(), w2.verifier()];

    let mut bad = w2.cosign(&cp, 12).unwrap();
    bad.sig[20] ^= 1;
    let note = append_signatures(cp.note(), &[w1.cosign(&cp, 10).unwrap(), bad]);
    assert_eq!(
        WitnessedCheckpoint::verify(&note, &log, &witnesses),
        Err(CosignatureError::InvalidCosignature {
            name: "w2".into(),
            key_id: w2.verifier().key_id()
        })
    );

    let twice = append_signatures(
        cp.note(),
        &[w1.cosign(&cp, 10).unwrap(), w1.cosign(&cp, 11).unwrap()],
    );
    assert_eq!(
        WitnessedCheckpoint::verify(&twice, &log, &witnesses),
        Err(CosignatureError::DuplicateCosignature {
            name: "w1".into(),
            key_id: w1.verifier().key_id()
        })
    );

    // A cosignature made for another checkpoint and pasted onto this one.
    let moved = append_signatures(cp.note(), &[w1.cosign(&checkpoint(8), 10).unwrap()]);
    assert!(matches!(
        WitnessedCheckpoint::verify(&moved, &log, &witnesses),
        Err(CosignatureError::InvalidCosignature { .. })
    ));

    // Cosignatures do not stand in for the log's signature.
    let unsigned_text = cp.checkpoint().to_text();
    let only_cosigned = format!(
        "{unsigned_text}\n{}\n",
        w1.cosign(&cp, 10).unwrap().to_line()
    );
    assert!(matches!(
        WitnessedCheckpoint::verify(&only_cosigned, &log, &witnesses),
        Err(CosignatureError::Checkpoint(CheckpointError::Note(
            NoteError::NoVerifiedSignature
        )))
    ));

    // Two different keys under one name and key id cannot be told apart.
    let twin = WitnessVerifier {
        name: w1.verifier().name.clone(),
        key_id: w1.verifier().key_id(),
        key: w2.verifier().key,
    };
    assert!(matches!(
        WitnessedCheckpoint::verify(cp.note(), &log, &[w1.verifier(), twin]),
        Err(CosignatureError::AmbiguousWitness { .. })
    ));
}

#[test]
fn signature_lines_parse_back() {
    let sig = witness("w1", 1).cosign(&checkpoint(1), 5).unwrap();
    assert_eq!(NoteSignature::parse_line(&sig.to_line()), Ok(sig));
    for bad in [
        "",
        "w1 AAAA",
        "\u{2014} w1",
        "\u{2014} w1 !!!!",
        "\u{2014} a+b AAAAAAAA",
    ] {
        assert_eq!(
            NoteSignature::parse_line(bad),
            Err(NoteError::MalformedSignatureLine { line: 1 }),
            "{bad:?}"
        );
    }
}
