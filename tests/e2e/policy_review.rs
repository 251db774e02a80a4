//! Safe policy changes through the real server: `AnalyzePolicySet` previews what a candidate set
//! would change among the logged decisions, `akashi-audit policy-diff` computes the same
//! analysis (and id) from the log on its own, and under the two-person rule a permit-all set
//! activated by the platform only waits until a regulator approves it naming an analysis.

use akashi::{auth::Role, config::PolicyApproval};
use auditor::cli::{DiffStart, PolicyDiff, ReplayConfig, policy_diff};
use auditor::exit::AuditExitCode;
use ledger::note::NoteVerifier;
use policy::engine::PolicyEngine;
use proto::pb;
use tonic::Code;

use crate::{
    api::{Api, allowed, ask, grant, verify_receipt},
    harness::{TestServer, expect_status},
};

/// The default set plus a rule that permits everything.
fn open_everything(active: &str) -> String {
    format!(
        "{active}\n@id(\"open-everything\")\n@reason(\"everything is allowed\")\npermit (principal, action, resource);\n"
    )
}

fn research(patient: &str) -> pb::AuthorizeRequest {
    ask(
        "Organization",
        "univ-a",
        "secondary_use",
        patient,
        "lab_result",
        "research",
        "PSEUDONYMIZED",
    )
}

/// Registers a university, a consent of `patient-1`, and logs one allowed and one denied
/// decision; returns the denied decision's leaf index.
async fn history(api: &Api) -> u64 {
    api.org("univ-a", "university").await;
    api.grant(grant(
        "patient-1",
        &["research"],
        &["lab_result"],
        &["univ-a"],
        &[],
        "PSEUDONYMIZED",
    ))
    .await;
    assert!(allowed(&api.authorize(research("patient-1")).await));
    let denied = api.authorize(research("patient-2")).await;
    assert!(!allowed(&denied));
    denied.receipt.unwrap().leaf_index
}

async fn active(api: &Api) -> pb::GetActivePolicySetResponse {
    api.policy()
        .get_active_policy_set(api.req(pb::GetActivePolicySetRequest {}))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_permit_all_set_waits_for_a_regulator_who_saw_its_analysis() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |config| {
        config.policy_approval = PolicyApproval::Regulator;
    })
    .await;
    let platform = Api::new(&server, Role::Platform, None).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let denied_at = history(&platform).await;
    let before = active(&platform).await;
    let open = open_everything(&before.policies);

    // The platform's activation only proposes the set: logged, pending, nothing in force.
    let proposed = platform
        .policy()
        .activate_policy_set(platform.req(pb::ActivatePolicySetRequest {
            request_id: String::new(),
            policies: open.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(proposed.pending);
    verify_receipt(proposed.receipt.as_ref().unwrap(), &server.vkey);
    let now = active(&platform).await;
    assert_eq!(now.policy_set_hash, before.policy_set_hash);
    assert_eq!(now.pending.len(), 1);
    assert_eq!(now.pending[0].policy_set_hash, proposed.policy_set_hash);
    assert_eq!(
        now.pending[0].proposed_at_index,
        proposed.receipt.as_ref().unwrap().leaf_index
    );
    assert!(!allowed(&platform.authorize(research("patient-2")).await));
    // Proposing it again, or the set in force, is refused.
    expect_status(
        "the same proposal again",
        platform
            .policy()
            .activate_policy_set(platform.req(pb::ActivatePolicySetRequest {
                request_id: String::new(),
                policies: open.clone(),
            }))
            .await,
        Code::FailedPrecondition,
        "already waiting for approval",
    );

    // Only a regulator approves, and only naming an analysis this server made of that set.
    expect_status(
        "the platform approves its own proposal",
        platform
            .policy()
            .approve_policy_set(platform.req(pb::ApprovePolicySetRequest {
                request_id: String::new(),
                policy_set_hash: proposed.policy_set_hash.clone(),
                analysis_id: "00".repeat(32),
            }))
            .await,
        Code::PermissionDenied,
        "",
    );
    expect_status(
        "a regulator activates directly",
        regulator
            .policy()
            .activate_policy_set(regulator.req(pb::ActivatePolicySetRequest {
                request_id: String::new(),
                policies: open.clone(),
            }))
            .await,
        Code::PermissionDenied,
        "",
    );
    expect_status(
        "an approval without an analysis",
        regulator
            .policy()
            .approve_policy_set(regulator.req(pb::ApprovePolicySetRequest {
                request_id: String::new(),
                policy_set_hash: proposed.policy_set_hash.clone(),
                analysis_id: String::new(),
            }))
            .await,
        Code::InvalidArgument,
        "analysis_id",
    );
    expect_status(
        "an approval naming an analysis never made",
        regulator
            .policy()
            .approve_policy_set(regulator.req(pb::ApprovePolicySetRequest {
                request_id: String::new(),
                policy_set_hash: proposed.policy_set_hash.clone(),
                analysis_id: "ab".repeat(32),
            }))
            .await,
        Code::FailedPrecondition,
        "AnalyzePolicySet",
    );
    expect_status(
        "an approval of a set nobody proposed",
        regulator
            .policy()
            .approve_policy_set(regulator.req(pb::ApprovePolicySetRequest {
                request_id: String::new(),
                policy_set_hash: "cd".repeat(32),
                analysis_id: "ab".repeat(32),
            }))
            .await,
        Code::NotFound,
        "pending policy set",
    );

    // The analysis: the denied decision would be allowed by the new rule.
    let analysis = regulator
        .policy()
        .analyze_policy_set(regulator.req(pb::AnalyzePolicySetRequest {
            policies: open.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(analysis.pending);
    assert_eq!(analysis.policy_set_hash, proposed.policy_set_hash);
    assert_eq!(analysis.active_policy_set_hash, before.policy_set_hash);
    assert_eq!(analysis.from_index, 0);
    assert!(analysis.to_index > denied_at);
    assert!(analysis.decisions >= 3, "{analysis:?}");
    assert_eq!(analysis.allow_to_deny, 0);
    assert!(analysis.deny_to_allow >= 2, "{analysis:?}");
    let group = analysis
        .groups
        .iter()
        .find(|g| g.example_leaf_indices.contains(&denied_at))
        .unwrap();
    assert_eq!(
        (
            group.direction.as_str(),
            group.rule.as_str(),
            group.purpose.as_str()
        ),
        ("deny_to_allow", "open-everything", "research")
    );

    // The auditor computes the same analysis from the log, independently.
    let config = ReplayConfig {
        tls: Default::default(),
        verifier: NoteVerifier::from_vkey(&server.vkey).unwrap(),
        grpc: format!("http://{}", server.grpc_addr),
        token: server.token(Role::Regulator, None),
    };
    let independent = policy_diff(
        &config,
        PolicyDiff {
            candidate: PolicyEngine::new(&open).unwrap(),
            start: DiffStart::From(analysis.from_index),
            end: Some(analysis.to_index),
        },
        Some(&analysis.analysis_id),
        false,
    )
    .await
    .unwrap();
    assert_eq!(independent.expected_id_matches, Some(true), "{independent}");
    assert_eq!(
        independent.exit_code(),
        AuditExitCode::Valid,
        "{independent}"
    );
    assert_eq!(independent.analysis.deny_to_allow, analysis.deny_to_allow);

    // Approved naming it: the set is in force, the wait is over, and it decides.
    let approval = pb::ApprovePolicySetRequest {
        policy_set_hash: proposed.policy_set_hash.clone(),
        analysis_id: analysis.analysis_id.clone(),
        request_id: "approve-open-1".into(),
    };
    let approved = regulator
        .policy()
        .approve_policy_set(regulator.req(approval.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.policy_set_hash, proposed.policy_set_hash);
    let receipt = approved.receipt.unwrap();
    // Retried (the answer was lost): the same approval, though the set no longer waits.
    let size = platform.size().await;
    let again = regulator
        .policy()
        .approve_policy_set(regulator.req(approval))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.receipt.unwrap().leaf_index, receipt.leaf_index);
    assert_eq!(platform.size().await, size);
    verify_receipt(&receipt, &server.vkey);
    let now = active(&platform).await;
    assert_eq!(now.policy_set_hash, proposed.policy_set_hash);
    assert_eq!(now.activated_at_index, receipt.leaf_index);
    assert!(now.pending.is_empty());
    let opened = platform.authorize(research("patient-2")).await;
    assert!(allowed(&opened));
    assert_eq!(opened.determining_policies, vec!["open-everything"]);

    // Both steps are public entries; the approval names the analysis.
    let leaves = platform
        .transparency()
        .get_leaves(pb::GetLeavesRequest {
            start: proposed.receipt.as_ref().unwrap().leaf_index,
            count: receipt.leaf_index - proposed.receipt.as_ref().unwrap().leaf_index + 1,
        })
        .await
        .unwrap()
        .into_inner()
        .leaves;
    let first = String::from_utf8_lossy(leaves.first().unwrap()).into_owned();
    let last = String::from_utf8_lossy(leaves.last().unwrap()).into_owned();
    assert!(first.starts_with("akashi/v1 policy.propose\n"), "{first}");
    assert!(last.starts_with("akashi/v1 policy.approve\n"), "{last}");
    assert!(
        last.contains(&format!("analysis {}", analysis.analysis_id)),
        "{last}"
    );
    // A proposal can be declined (or withdrawn): it leaves the list, logged, and can no longer be
    // approved.
    let declined = platform
        .policy()
        .activate_policy_set(platform.req(pb::ActivatePolicySetRequest {
            request_id: String::new(),
            policies: before.policies.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(declined.pending);
    let rejected = regulator
        .policy()
        .reject_policy_set(regulator.req(pb::RejectPolicySetRequest {
            request_id: String::new(),
            policy_set_hash: declined.policy_set_hash.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    verify_receipt(&rejected.receipt.unwrap(), &server.vkey);
    assert!(active(&platform).await.pending.is_empty());
    expect_status(
        "approving a declined set",
        regulator
            .policy()
            .approve_policy_set(regulator.req(pb::ApprovePolicySetRequest {
                request_id: String::new(),
                policy_set_hash: declined.policy_set_hash.clone(),
                analysis_id: analysis.analysis_id.clone(),
            }))
            .await,
        Code::NotFound,
        "pending policy set",
    );
    expect_status(
        "declining it twice",
        platform
            .policy()
            .reject_policy_set(platform.req(pb::RejectPolicySetRequest {
                request_id: String::new(),
                policy_set_hash: declined.policy_set_hash.clone(),
            }))
            .await,
        Code::NotFound,
        "pending policy set",
    );
    // The regulator's replay re-decides the decisions made under the approved set too.
    let report = auditor::cli::replay(&config, false).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    server.stop().await;
}

#[tokio::test]
async fn without_the_two_person_rule_the_platform_activates_and_analyses_windows() {
    let server = TestServer::start().await;
    let platform = Api::new(&server, Role::Platform, None).await;
    let denied_at = history(&platform).await;
    let before = active(&platform).await;
    let open = open_everything(&before.policies);
    let analyse = |request: pb::AnalyzePolicySetRequest| {
        let platform = platform.clone();
        async move {
            platform
                .policy()
                .analyze_policy_set(platform.req(request))
                .await
        }
    };
    // A window of the last entries holds only the denied decision.
    let last = analyse(pb::AnalyzePolicySetRequest {
        policies: open.clone(),
        last_entries: platform.size().await - denied_at,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!((last.from_index, last.decisions), (denied_at, 1));
    assert_eq!(last.deny_to_allow, 1);
    assert!(!last.pending);
    // The same window by index is the same analysis; a window of days holds every decision.
    let by_index = analyse(pb::AnalyzePolicySetRequest {
        policies: open.clone(),
        from_index: Some(denied_at),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(by_index.analysis_id, last.analysis_id);
    let today = analyse(pb::AnalyzePolicySetRequest {
        policies: open.clone(),
        days: 1,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert!(today.decisions >= 2, "{today:?}");
    // Bad requests name the field.
    expect_status(
        "two windows",
        analyse(pb::AnalyzePolicySetRequest {
            policies: open.clone(),
            last_entries: 5,
            days: 1,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "last_entries",
    );
    expect_status(
        "a set that does not compile",
        analyse(pb::AnalyzePolicySetRequest {
            policies: "permit (principal, action == Action::\"nope\", resource);".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "policies",
    );
    let patient = Api::new(&server, Role::Patient, Some("patient-1")).await;
    expect_status(
        "a patient analyses",
        patient
            .policy()
            .analyze_policy_set(patient.req(pb::AnalyzePolicySetRequest {
                policies: open.clone(),
                ..Default::default()
            }))
            .await,
        Code::PermissionDenied,
        "",
    );
    // With no approval rule the platform's activation takes effect at once.
    let activated = platform
        .policy()
        .activate_policy_set(platform.req(pb::ActivatePolicySetRequest {
            request_id: String::new(),
            policies: open,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!activated.pending);
    assert_eq!(
        active(&platform).await.policy_set_hash,
        activated.policy_set_hash
    );
    server.stop().await;
}
