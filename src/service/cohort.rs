//! `AccessService/AuthorizeCohort`: one access request asked for each patient of a cohort (a
//! data-provision desk's "which of these patients may X receive, for this purpose?"), decided
//! against one position of the log and logged as one decision entry per patient, all or none.
//!
//! Each patient's decision is exactly the one `Authorize` would give for the template with that
//! patient (and their own source facility and department, when given): the request is parsed
//! and normalised the same way, every decision is prepared against the committed state on the
//! caller's side (on blocking threads, in parallel), and the sequencer logs the group at
//! consecutive positions of one batch (`ledger::sequencer::Sequencer::submit_group`), whose
//! single commit record writes all of the entries or none. The writer re-checks each prepared
//! decision at its own position like any other, so a revocation sequenced before the cohort
//! affects it. So every patient's history shows whether they were included in this release.
//!
//! **Statistics.** A statistical release covers the patients allowed, so its cohort is the
//! stated `cohort_size` (this call's patients by default; more for a cohort larger than one
//! call) less the patients denied. The decisions are prepared with the stated size, then again
//! with the size that remains, until the number allowed no longer changes (or nobody is
//! allowed: then the decisions state the size at which that happened); the threshold rule
//! therefore judges the release by the patients it really covers, and every logged decision
//! states that size. The sequencer logs such a cohort only if every prepared decision still
//! holds at its position (`StateMachine::check_group`), so the count is the logged one;
//! otherwise the cohort is decided again ([`STATISTICS_ATTEMPTS`] attempts in all, then
//! `ABORTED`).
//!
//! Answers carry no inclusion proofs unless `with_proofs` asks for them (a 10,000-patient
//! cohort's proofs weigh several megabytes); `TransparencyService/GetInclusionProof` gives any
//! one later. The answer's bytes are reserved in the answer budget before anything is logged.

use std::collections::HashSet;

use ledger::{entry::Leaf, hash::LeafIndex, sequencer::GroupReceipt};
use policy::{
    decision::Request as AccessRequest,
    domain::{Action, Effect, Principal, PrincipalType, SubjectId},
};
use proto::pb;
use tonic::{Request, Response, Status};

use super::{Core, budget, optional, parse, request_key, required};
use crate::{
    auth::{Role, caller, require},
    error::{Error, FieldProblem},
    state_machine::{Command, Output, Prepared, Submission},
};

/// Most patients in one call; a larger cohort takes several calls.
pub const MAX_COHORT: usize = 10_000;
/// How many attempts a cohort for statistics gets when the state changes under it.
pub const STATISTICS_ATTEMPTS: usize = 3;
/// Answer bytes reserved per patient, without and with proofs (decision, reasons, policy ids;
/// the leaf and a proof of up to 40 hashes).
const ANSWER_BYTES: usize = 512;
const ANSWER_BYTES_WITH_PROOF: usize = ANSWER_BYTES + 256 + 40 * 34;

/// One patient of the cohort, parsed.
struct Member {
    patient_id: String,
    subject: SubjectId,
    source_facility: Option<policy::domain::FacilityId>,
    source_department: Option<policy::domain::Department>,
}

/// Answers `AuthorizeCohort`.
pub async fn authorize_cohort(
    core: &Core,
    request: Request<pb::AuthorizeCohortRequest>,
) -> Result<Response<pb::AuthorizeCohortResponse>, Status> {
    require(caller(&request)?, &[Role::Platform])?;
    let key = request_key(&request, &request.get_ref().request_id)?;
    let mut reservation = budget::reserve(&request)?;
    let r = request.into_inner();
    if r.subjects.is_empty() {
        return Err(Error::invalid("subjects", FieldProblem::Missing).into());
    }
    if r.subjects.len() > MAX_COHORT {
        return Err(Error::invalid("subjects", FieldProblem::TooMany { max: MAX_COHORT }).into());
    }
    let per_patient = if r.with_proofs {
        ANSWER_BYTES_WITH_PROOF
    } else {
        ANSWER_BYTES
    };
    reservation.grow(r.subjects.len() * per_patient)?;
    let template = parse_template(&r)?;
    let members = parse_members(core, &r, &template)?;
    let n = members.len() as u64;
    let group_len = u32::try_from(n).map_err(|_| Error::Internal("a cohort too large"))?;
    let asked = |cohort_size, fresh| Asked {
        subjects: members.iter().map(|m| m.subject.clone()).collect(),
        labels: (template.action, template.purpose, template.level),
        cohort_size,
        with_proofs: r.with_proofs,
        fresh,
    };
    let statistics = template.action == Action::ExportStatistics;
    let stated = if statistics {
        let stated = if r.cohort_size == 0 { n } else { r.cohort_size };
        if stated < n {
            return Err(Error::invalid(
                "cohort_size",
                FieldProblem::Invalid {
                    reason: "is smaller than the number of `subjects`".to_owned(),
                },
            )
            .into());
        }
        Some(stated)
    } else {
        (r.cohort_size > 0).then_some(r.cohort_size)
    };
    // Decisions are prepared with the active set compiled (after a restart the writer would
    // otherwise decide every one itself). Without one the writer refuses, as for `Authorize`.
    let compiled = core.decisions().compile_active(core.log());
    if statistics {
        compiled?;
    }
    let mut attempt = 0;
    let (answer, size, fresh) = loop {
        attempt += 1;
        // A retry of a logged cohort is answered from the log, without deciding anything
        // again (also when its original was logged while this call prepared).
        if let Some(key) = &key
            && let Some(recorded) = core.recorded(key)?
        {
            let (answer, size) = core.first_group_answer(key, &recorded).await?;
            break (answer, size, false);
        }
        let prepared = if statistics {
            prepare_statistics(core, &template, &members, stated.unwrap_or(n)).await
        } else {
            prepare(core, &template, &members, stated)
                .await
                .map(|prepared| (prepared, stated))
        };
        let (prepared, size) = match prepared {
            Ok(prepared) => prepared,
            Err(Error::Conflict(_)) if attempt < STATISTICS_ATTEMPTS => continue,
            Err(err) => return Err(err.into()),
        };
        let group = prepared
            .into_iter()
            .enumerate()
            .map(|(position, (request, prepared, subject_vrf))| Submission {
                command: Command::Authorize(request, prepared),
                subject_vrf,
                request: if position == 0 { key } else { None },
                group_len: if position == 0 { group_len } else { 0 },
            })
            .collect();
        match core.submit_group(group).await {
            Ok((answer, Some(first_size))) => break (answer, first_size, false),
            Ok((answer, None)) => break (answer, size, true),
            Err(Error::Conflict(_)) if attempt < STATISTICS_ATTEMPTS => {
                tracing::debug!(
                    attempt,
                    "a statistics cohort met a changed state; deciding again"
                );
            }
            Err(err) => return Err(err.into()),
        }
    };
    let response = respond(core, answer, asked(size, fresh)).await?;
    // The estimate reserved is a guess at reasons' length: the answer's real size is taken
    // from the budget too, where it can be (the decisions are logged; the answer is owed).
    let reserved = n as usize * per_patient;
    let _ = reservation.grow(prost::Message::encoded_len(&response).saturating_sub(reserved));
    Ok(reservation.attach(Response::new(response)))
}

/// The template: every field of the request but the patients, parsed as `Authorize` parses
/// them.
fn parse_template(r: &pb::AuthorizeCohortRequest) -> Result<AccessRequest, Error> {
    let principal = r
        .principal
        .as_ref()
        .ok_or(Error::invalid("principal", FieldProblem::Missing))?;
    let principal_type: PrincipalType = required("principal.type", &principal.r#type, parse)?;
    let principal = match principal_type {
        PrincipalType::Patient => {
            return Err(Error::invalid(
                "principal.type",
                FieldProblem::Invalid {
                    reason: "a patient asks only about themself, never about a cohort".to_owned(),
                },
            ));
        }
        PrincipalType::Clinician => {
            Principal::Clinician(required("principal.id", &principal.id, parse)?)
        }
        PrincipalType::Organization => {
            Principal::Organization(required("principal.id", &principal.id, parse)?)
        }
    };
    Ok(AccessRequest {
        principal,
        action: required("action", &r.action, parse)?,
        subject: None,
        data_category: required("data_category", &r.data_category, parse)?,
        source_facility: optional("source_facility", &r.source_facility, parse)?,
        source_department: optional("source_department", &r.source_department, parse)?,
        purpose: required("purpose", &r.purpose, parse)?,
        level: required("level", &r.level, parse)?,
        cohort_size: None,
    })
}

/// The patients, each at most once, with their own source facility and department or the
/// template's.
fn parse_members(
    core: &Core,
    r: &pb::AuthorizeCohortRequest,
    template: &AccessRequest,
) -> Result<Vec<Member>, Error> {
    let mut seen = HashSet::with_capacity(r.subjects.len());
    let mut members = Vec::with_capacity(r.subjects.len());
    for (position, s) in r.subjects.iter().enumerate() {
        let at = |err: Error| item(position, err);
        let subject = core.subject("patient_id", &s.patient_id).map_err(at)?;
        if !seen.insert(subject.clone()) {
            return Err(Error::InvalidItem {
                list: "subjects",
                position,
                field: "patient_id",
                problem: FieldProblem::Invalid {
                    reason: "names a patient named before in `subjects`".to_owned(),
                },
            });
        }
        let source_facility = optional("source_facility", &s.source_facility, parse)
            .map_err(at)?
            .or_else(|| template.source_facility.clone());
        let source_department = optional("source_department", &s.source_department, parse)
            .map_err(at)?
            .or_else(|| template.source_department.clone());
        members.push(Member {
            patient_id: s.patient_id.clone(),
            subject,
            source_facility,
            source_department,
        });
    }
    Ok(members)
}

/// A field error of one patient, named by its position in `subjects`.
fn item(position: usize, err: Error) -> Error {
    match err {
        Error::InvalidArgument { field, problem } => Error::InvalidItem {
            list: "subjects",
            position,
            field,
            problem,
        },
        other => other,
    }
}

/// A patient's request, its prepared decision, and their VRF output when the subject map needs
/// one.
type Prepped = (
    AccessRequest,
    Option<Box<Prepared>>,
    Option<ledger::vrf::VrfOutput>,
);

/// Prepares every patient's decision for the template with `cohort_size`, on blocking threads
/// (one chunk per core).
async fn prepare(
    core: &Core,
    template: &AccessRequest,
    members: &[Member],
    cohort_size: Option<u64>,
) -> Result<Vec<Prepped>, Error> {
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let chunk = members.len().div_ceil(threads).max(1);
    let mut tasks = Vec::with_capacity(threads);
    for part in members.chunks(chunk) {
        let work: Vec<(AccessRequest, String)> = part
            .iter()
            .map(|m| {
                (
                    AccessRequest {
                        subject: Some(m.subject.clone()),
                        source_facility: m.source_facility.clone(),
                        source_department: m.source_department.clone(),
                        cohort_size,
                        ..template.clone()
                    },
                    m.patient_id.clone(),
                )
            })
            .collect();
        let core = core.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let log = core.log();
            work.into_iter()
                .map(|(request, patient_id)| {
                    let prepared = core.decisions().prepare(log, &request);
                    let subject_vrf = match (core.subject_map(), &request.subject) {
                        (Some(key), Some(subject)) => key.output_for(log, subject, &patient_id)?,
                        _ => None,
                    };
                    Ok((request, prepared, subject_vrf))
                })
                .collect::<Result<Vec<Prepped>, Error>>()
        }));
    }
    let mut prepared = Vec::with_capacity(members.len());
    for task in tasks {
        let part = task
            .await
            .map_err(|_| Error::Internal("preparing a cohort failed"))??;
        prepared.extend(part);
    }
    Ok(prepared)
}

/// Prepares a statistics cohort: with the stated size, then with the size left once the
/// patients denied are taken out, until the number allowed stays the same. Every decision must
/// be prepared (the count is taken from them).
async fn prepare_statistics(
    core: &Core,
    template: &AccessRequest,
    members: &[Member],
    stated: u64,
) -> Result<(Vec<Prepped>, Option<u64>), Error> {
    core.decisions().compile_active(core.log())?;
    let n = members.len() as u64;
    let mut size = stated;
    // The size only shrinks, and the threshold denies all or none at one size: a few rounds.
    for _ in 0..8 {
        let prepared = prepare(core, template, members, Some(size)).await?;
        let mut allowed = 0;
        for (_, decision, _) in &prepared {
            match decision {
                Some(decision) => allowed += u64::from(decision.allows()),
                None => {
                    return Err(Error::Conflict(
                        "the policy set changed while the cohort was decided; retry".to_owned(),
                    ));
                }
            }
        }
        let remaining = stated - (n - allowed);
        // Settled; or nobody is allowed, and the decisions say at which size that happened.
        if remaining == size || allowed == 0 {
            return Ok((prepared, Some(size)));
        }
        size = remaining;
    }
    Err(Error::FailedPrecondition(
        "the cohort's size did not settle over the patients allowed".to_owned(),
    ))
}

/// What the answer needs of the request.
struct Asked {
    /// The patients' pseudonyms, in the order asked.
    subjects: Vec<SubjectId>,
    /// The template's action, purpose and level (for the decision counters).
    labels: (Action, policy::domain::Purpose, policy::domain::Level),
    cohort_size: Option<u64>,
    with_proofs: bool,
    /// Whether the decisions were made by this call (not a retry's first answer): only those
    /// are counted in the decision counters.
    fresh: bool,
}

/// The answer: decisions in the order asked, the count allowed, the checkpoint, and proofs when
/// asked for.
async fn respond(
    core: &Core,
    answer: GroupReceipt<Output>,
    asked: Asked,
) -> Result<pb::AuthorizeCohortResponse, Error> {
    let Asked {
        subjects,
        labels,
        cohort_size,
        with_proofs,
        fresh,
    } = asked;
    if subjects.len() != answer.outputs.len() {
        return Err(Error::Internal(
            "a cohort's answer does not match its patients",
        ));
    }
    let GroupReceipt {
        first,
        leaf_hashes: _,
        checkpoint,
        outputs,
    } = answer;
    let tree_size = checkpoint.checkpoint().size;
    let core = core.clone();
    tokio::task::spawn_blocking(move || {
        let mut decisions = Vec::with_capacity(outputs.len());
        let mut allowed = 0;
        for (offset, (output, subject)) in outputs.into_iter().zip(&subjects).enumerate() {
            let Output::Decided { decision, leaf } = output else {
                return Err(Error::Internal("a cohort answered with another output"));
            };
            let index = LeafIndex(first.get() + offset as u64);
            if fresh {
                core.decisions().answered().record((
                    labels.0,
                    labels.1,
                    labels.2,
                    decision.effect,
                    decision.review_required,
                ));
            }
            // As `Authorize` answers it: the logged recipient (public, in the leaf) and the
            // patient's pseudonym name the reference a recipient's change stream uses.
            let recipient = Leaf::decode(&leaf)
                .ok()
                .and_then(|l| l.attribute("recipient").map(str::to_owned));
            let patient_ref = match recipient {
                Some(recipient) if recipient != "none" => core
                    .subject_key()
                    .recipient_reference(&recipient, subject.as_str()),
                _ => String::new(),
            };
            let effect = match decision.effect {
                Effect::Allow => {
                    allowed += 1;
                    pb::Decision::Allow
                }
                Effect::Deny => pb::Decision::Deny,
            };
            let inclusion_proof = if with_proofs {
                super::hashes(&core.log().inclusion_proof(index, tree_size)?.path)
            } else {
                Vec::new()
            };
            decisions.push(pb::CohortDecision {
                decision: effect.into(),
                determining_policies: decision.determining_policies,
                reasons: decision.reasons,
                review_required: decision.review_required,
                leaf_index: index.get(),
                errors: decision.errors,
                patient_ref,
                leaf: if with_proofs { leaf } else { Vec::new() },
                inclusion_proof,
            });
        }
        Ok(pb::AuthorizeCohortResponse {
            decisions,
            allowed,
            checkpoint: checkpoint.note().to_owned(),
            tree_size: tree_size.get(),
            cohort_size: cohort_size.unwrap_or_default(),
        })
    })
    .await
    .map_err(|_| Error::Internal("answering a cohort failed"))?
}
