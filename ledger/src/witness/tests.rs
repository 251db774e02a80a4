use super::*;

/// The example request body of c2sp.org/tlog-witness §add-checkpoint, verbatim.
const SPEC_REQUEST: &str = "old 20852014
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=

example.com/behind-the-sofa
20852163
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=
\u{2014} example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=
";

/// The example answer body of the same section.
const SPEC_RESPONSE: &str = "\u{2014} witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==
\u{2014} witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==
\u{2014} witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==
";

#[test]
fn the_spec_request_parses_and_encodes_back() {
    let request = AddCheckpoint::parse(SPEC_REQUEST.as_bytes()).unwrap();
    assert_eq!(request.old_size, TreeSize(20_852_014));
    assert_eq!(request.proof.len(), 4);
    assert!(
        request
            .note
            .starts_with("example.com/behind-the-sofa\n20852163\n")
    );
    assert_eq!(request.to_body(), SPEC_REQUEST);
}

#[test]
fn the_spec_response_parses() {
    let sigs = parse_cosignatures(SPEC_RESPONSE.as_bytes()).unwrap();
    let names: Vec<_> = sigs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "witness.example/w1",
            "witness.example/w1",
            "witness.example/w2"
        ]
    );
    assert!(sigs.iter().all(|s| s.sig.len() == 72));
}

#[test]
fn a_request_from_zero_has_no_proof_lines() {
    let request = AddCheckpoint {
        old_size: TreeSize(0),
        proof: Vec::new(),
        note: "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u{2014} o AAAAAAAA\n".into(),
    };
    let body = request.to_body();
    assert!(body.starts_with("old 0\n\no\n1\n"));
    assert_eq!(AddCheckpoint::parse(body.as_bytes()), Ok(request));
}

#[test]
fn malformed_requests_are_rejected_with_the_reason() {
    let note = "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u{2014} o AAAAAAAA\n";
    let hash = "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=";
    let cases: Vec<(String, WitnessProtocolError)> = vec![
        (String::new(), WitnessProtocolError::OldSizeLine),
        (
            format!("old 01\n\n{note}"),
            WitnessProtocolError::OldSizeLine,
        ),
        (
            format!("old -1\n\n{note}"),
            WitnessProtocolError::OldSizeLine,
        ),
        (
            format!("old  1\n\n{note}"),
            WitnessProtocolError::OldSizeLine,
        ),
        (
            format!("new 1\n\n{note}"),
            WitnessProtocolError::OldSizeLine,
        ),
        (
            format!("old 99999999999999999999\n\n{note}"),
            WitnessProtocolError::OldSizeLine,
        ),
        (
            format!("old 1\n{hash}\nnot-base64\n\n{note}"),
            WitnessProtocolError::ProofLine { line: 3 },
        ),
        (
            format!("old 1\nAAAA\n\n{note}"),
            WitnessProtocolError::ProofLine { line: 2 },
        ),
        ("old 1\n".into(), WitnessProtocolError::MissingCheckpoint),
        (
            format!("old 1\n{hash}\n"),
            WitnessProtocolError::MissingCheckpoint,
        ),
        ("old 1\n\n".into(), WitnessProtocolError::MissingCheckpoint),
        (
            format!("old 1\n{}\n{note}", format!("{hash}\n").repeat(64)),
            WitnessProtocolError::TooManyProofLines { max: 63 },
        ),
    ];
    for (body, want) in cases {
        assert_eq!(AddCheckpoint::parse(body.as_bytes()), Err(want), "{body:?}");
    }
    assert_eq!(
        AddCheckpoint::parse(&[b'o', b'l', b'd', b' ', 0xff, b'\n']),
        Err(WitnessProtocolError::NotText)
    );
    let huge = vec![b'a'; MAX_REQUEST_SIZE + 1];
    assert_eq!(
        AddCheckpoint::parse(&huge),
        Err(WitnessProtocolError::TooLarge {
            size: MAX_REQUEST_SIZE + 1,
            max: MAX_REQUEST_SIZE
        })
    );
    // 63 proof lines is the most allowed.
    let most = format!("old 1\n{}\n{note}", format!("{hash}\n").repeat(63));
    assert_eq!(
        AddCheckpoint::parse(most.as_bytes()).unwrap().proof.len(),
        63
    );
}

#[test]
fn malformed_answers_are_rejected() {
    assert_eq!(
        parse_cosignatures(b""),
        Err(WitnessProtocolError::NoCosignatures)
    );
    let line = SPEC_RESPONSE.lines().next().unwrap();
    assert_eq!(
        parse_cosignatures(line.as_bytes()),
        Err(WitnessProtocolError::Signature(
            NoteError::MissingSignatures
        ))
    );
    assert_eq!(
        parse_cosignatures(format!("{line}\nnot a line\n").as_bytes()),
        Err(WitnessProtocolError::Signature(
            NoteError::MalformedSignatureLine { line: 2 }
        ))
    );
    assert_eq!(
        parse_cosignatures(format!("{line}\n\n").as_bytes()),
        Err(WitnessProtocolError::Signature(
            NoteError::MalformedSignatureLine { line: 2 }
        ))
    );
    assert!(matches!(
        parse_cosignatures(&vec![b'a'; MAX_RESPONSE_SIZE + 1]),
        Err(WitnessProtocolError::TooLarge { .. })
    ));
    // 101 lines of ~125 bytes fit the size cap, so the count cap is what refuses them.
    let many = format!("{line}\n").repeat(MAX_NOTE_SIGNATURES + 1);
    assert!(many.len() <= MAX_RESPONSE_SIZE);
    assert_eq!(
        parse_cosignatures(many.as_bytes()),
        Err(WitnessProtocolError::TooManySignatures {
            max: MAX_NOTE_SIGNATURES
        })
    );
    let most = format!("{line}\n").repeat(MAX_NOTE_SIGNATURES);
    assert_eq!(
        parse_cosignatures(most.as_bytes()).map(|s| s.len()),
        Ok(MAX_NOTE_SIGNATURES)
    );
}

#[test]
fn conflict_sizes_round_trip() {
    assert_eq!(size_body(TreeSize(42)), "42\n");
    assert_eq!(parse_size_body(b"42\n"), Ok(TreeSize(42)));
    assert_eq!(parse_size_body(b"0\n"), Ok(TreeSize(0)));
    for bad in [&b"42"[..], b"042\n", b"\n", b"x\n", b"42\n\n", b"-1\n"] {
        assert_eq!(
            parse_size_body(bad),
            Err(WitnessProtocolError::SizeBody),
            "{bad:?}"
        );
    }
}
