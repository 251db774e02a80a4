//! Request bytes from outside, decoded as each `akashi.v1` request message through the codec the
//! server uses (`proto::codec`): decoding never panics, and whatever decodes encodes and decodes
//! back to the same message.
#![no_main]

use proto::{codec::decode, pb};

/// Decodes `data` as `T`; a message that decodes must survive a round trip.
fn check<T: prost::Message + Default + PartialEq>(data: &[u8]) {
    if let Ok(message) = decode::<T>(data) {
        let again = decode::<T>(&message.encode_to_vec()).expect("re-encoded message decodes");
        assert!(again == message, "round trip changed the message");
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    match which % 21 {
        0 => check::<pb::ActivatePolicySetRequest>(data),
        1 => check::<pb::AuthorizeRequest>(data),
        2 => check::<pb::GetActivePolicySetRequest>(data),
        3 => check::<pb::GetCheckpointRequest>(data),
        4 => check::<pb::GetConsentStateRequest>(data),
        5 => check::<pb::GetConsistencyProofRequest>(data),
        6 => check::<pb::GetEntriesRequest>(data),
        7 => check::<pb::GetInclusionProofRequest>(data),
        8 => check::<pb::GetLeavesRequest>(data),
        9 => check::<pb::GetPublicBodyRequest>(data),
        10 => check::<pb::GetSubjectHistoryRequest>(data),
        11 => check::<pb::GrantConsentRequest>(data),
        12 => check::<pb::ListCheckpointsRequest>(data),
        13 => check::<pb::RecordOptOutRequest>(data),
        14 => check::<pb::RevokeConsentRequest>(data),
        15 => check::<pb::SetEmergencyRequest>(data),
        16 => check::<pb::UpsertClinicianRequest>(data),
        17 => check::<pb::UpsertFacilityGroupRequest>(data),
        18 => check::<pb::UpsertFacilityRequest>(data),
        19 => check::<pb::UpsertOrganizationRequest>(data),
        _ => check::<pb::ValidatePolicySetRequest>(data),
    }
});
