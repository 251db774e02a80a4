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

/// More patients than one flush takes, between two checkpoints: the recomputed map matches the
/// map of the final records whatever the batching, and a checkpoint naming another root is a
/// mismatch.
#[test]
fn records_gathered_over_several_flushes_give_the_map_of_the_set() {
    use ledger::{
        checkpoint::Checkpoint,
        completeness::{MapCommitment, SubjectRecord, map_key},
        hash::{Hash, TreeSize, hash_leaf},
        map,
    };
    use policy::domain::SubjectId;

    use super::{About, FLUSH_AT, SubjectMapCheck};
    use crate::report::{Finding, Report};

    let patients = FLUSH_AT as u64 + 500;
    let subjects: Vec<SubjectId> = (0..patients)
        .map(|i| SubjectId::new(format!("{:064x}", i + 1)).unwrap())
        .collect();
    let outputs: Vec<VrfOutput> = (0..patients)
        .map(|i| {
            let mut beta = [0u8; 64];
            beta[..8].copy_from_slice(&(i + 1).to_be_bytes());
            beta[8..40].copy_from_slice(&hash_leaf(&i.to_be_bytes()).0);
            VrfOutput(beta)
        })
        .collect();
    let vrf_key = [9u8; 32];
    let checkpoint = |size: u64, root: Hash| {
        let mut c = Checkpoint::new("example.org/log", TreeSize(size), Hash([0; 32]));
        c.extensions.push(MapCommitment { vrf_key, root }.to_line());
        c
    };
    let mut check = SubjectMapCheck::default();
    let mut report = Report::default();
    // The empty map's checkpoint first, so that every later entry owes an output.
    check.add_checkpoint(&checkpoint(0, map::EMPTY), 0, &mut report);
    let mut records = std::collections::HashMap::new();
    // Every patient once, then the first 100 again: 2 entries each for those.
    let order = (0..patients).chain(0..100);
    for (index, i) in order.enumerate() {
        let index = index as u64;
        let i = usize::try_from(i).unwrap();
        let hex: String = outputs[i].0.iter().map(|b| format!("{b:02x}")).collect();
        let payload = body(&hex.into());
        let leaf = index.to_be_bytes();
        let key = map_key(&outputs[i]);
        let record = match records.get(&key) {
            Some(r) => SubjectRecord::then(r, index, &hash_leaf(&leaf)),
            None => SubjectRecord::first(&outputs[i], index, &hash_leaf(&leaf)),
        };
        records.insert(key, record);
        check.entry(
            index,
            &leaf,
            About::Patient {
                subject: &subjects[i],
                payload: &payload,
            },
            &mut report,
        );
    }
    let size = patients + 100;
    let set: Vec<_> = records.iter().map(|(k, r)| (*k, r.value_hash())).collect();
    let root = map::root_of(&set);
    check.add_checkpoint(&checkpoint(size, root), size, &mut report);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.subject_maps_checked, 2);
    check.add_checkpoint(&checkpoint(size, Hash([1; 32])), size, &mut report);
    assert!(matches!(
        report.findings.as_slice(),
        [Finding::SubjectMapMismatch { .. }]
    ));
}
