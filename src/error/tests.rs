use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use super::{Error, FieldProblem};
use crate::auth::{AuthError, Method, Refusal, Role};

#[test]
fn invalid_argument_names_the_field_in_message_and_details() {
    let status = Status::from(Error::invalid(
        "principal.type",
        FieldProblem::UnknownValue {
            value: "Robot".into(),
            expected: "`Organization`, `Clinician`, `Patient`",
        },
    ));
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("`principal.type` has unknown value `Robot`")
    );
    let details = status.get_error_details();
    let violations = &details.bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "principal.type");
    assert!(violations[0].description.contains("`Robot`"));
}

#[test]
fn every_kind_maps_to_its_code() {
    let cases = [
        (
            Error::invalid("patient_id", FieldProblem::Missing),
            Code::InvalidArgument,
        ),
        (
            Error::NotFound {
                kind: "organisation",
                id: "org-1".into(),
            },
            Code::NotFound,
        ),
        (
            Error::Refused(Refusal::Unauthenticated(AuthError::Expired)),
            Code::Unauthenticated,
        ),
        (
            Error::Refused(Refusal::MethodDenied {
                role: Role::Patient,
                method: Method::from_path("/akashi.v1.AccessService/Authorize"),
            }),
            Code::PermissionDenied,
        ),
        (
            Error::Refused(Refusal::SubjectDenied {
                role: Role::Patient,
                method: Method::default(),
            }),
            Code::PermissionDenied,
        ),
        (Error::ForeignSubject, Code::PermissionDenied),
        (
            Error::OutOfRange {
                field: "tree_size",
                value: 10,
                limit: 5,
            },
            Code::OutOfRange,
        ),
        (Error::Unavailable("disk on fire".into()), Code::Unavailable),
        (Error::Internal("broken invariant"), Code::Internal),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code);
        assert_eq!(Status::from(err).code(), code);
    }
}

#[test]
fn messages_read_well() {
    assert_eq!(
        Status::from(Error::invalid("patient_id", FieldProblem::Missing)).message(),
        "`patient_id` is required"
    );
    assert_eq!(
        Status::from(Error::NotFound {
            kind: "consent",
            id: "c-9".into()
        })
        .message(),
        "unknown consent `c-9`"
    );
    assert_eq!(
        Status::from(Error::OutOfRange {
            field: "tree_size",
            value: 10,
            limit: 5
        })
        .message(),
        "`tree_size` is 10, beyond 5"
    );
}

#[test]
fn internals_do_not_leak() {
    let unavailable = Status::from(Error::Unavailable("sled: /var/lib/x corrupted".into()));
    assert_eq!(unavailable.message(), "the ledger is unavailable");
    let internal = Status::from(Error::Internal("tree size mismatch at 77"));
    assert_eq!(internal.message(), "internal error");
}

#[test]
fn a_role_refused_a_whole_method_is_told_so() {
    let method = Method::from_path("/akashi.v1.AccessService/Authorize");
    assert_eq!(
        Error::Refused(Refusal::MethodDenied {
            role: Role::Patient,
            method: method.clone(),
        })
        .to_string(),
        "the patient role may not call `AccessService/Authorize`"
    );
    assert_eq!(
        Error::Refused(Refusal::SubjectDenied {
            role: Role::Patient,
            method,
        })
        .to_string(),
        "the patient role may call `AccessService/Authorize` only about the patient its token names"
    );
    assert_eq!(
        Error::Refused(Refusal::MethodDenied {
            role: Role::Auditor,
            method: Method::default(),
        })
        .to_string(),
        "the auditor role may not call this method"
    );
}
