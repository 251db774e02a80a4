use ledger::vrf::VrfOutput;

use super::vrf_output;

fn body(output: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "consent.revoke",
        "subject_vrf_output": output,
    }))
    .unwrap()
}

#[test]
fn the_output_is_64_bytes_of_lowercase_hex() {
    let hex: String = (0..64u8).map(|b| format!("{b:02x}")).collect();
    let mut want = [0u8; 64];
    for (i, b) in want.iter_mut().enumerate() {
        *b = i as u8;
    }
    assert_eq!(
        vrf_output(&body(&hex.clone().into())),
        Some(VrfOutput(want))
    );
    for bad in [
        serde_json::json!(hex.to_uppercase()),
        serde_json::json!(&hex[2..]),
        serde_json::json!(format!("{hex}00")),
        serde_json::json!(format!("{}zz", &hex[2..])),
        serde_json::json!(3),
        serde_json::Value::Null,
    ] {
        assert_eq!(vrf_output(&body(&bad)), None, "{bad}");
    }
    assert_eq!(vrf_output(br#"{"type": "consent.revoke"}"#), None);
    assert_eq!(vrf_output(b"not json"), None);
}
