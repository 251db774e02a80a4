//! Saved histories given to `akashi-audit history --input` (`GetSubjectHistory` responses as
//! grpcurl prints them): reading them never panics, and neither does turning a page's
//! completeness fields into a proof and checking it against a map commitment.
#![no_main]
use ledger::{completeness::MapCommitment, hash::Hash, vrf::VrfSecretKey};

libfuzzer_sys::fuzz_target!(|data: &str| {
    let Ok(pages) = auditor::history::pages_from_json(data) else {
        return;
    };
    let key = VrfSecretKey::from_seed([7; 32]);
    let commitment = MapCommitment {
        vrf_key: key.public().to_bytes(),
        root: Hash([3; 32]),
    };
    for page in pages {
        if let Some(Ok(proof)) = page.completeness.map(|c| c.subject_proof()) {
            let _ = proof.verify("patient-1", &commitment);
        }
    }
});
