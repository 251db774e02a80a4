"""Validates FHIR R4 (4.0.1) JSON resources with the `fhir.resources` models.

Usage: validate_r4.py FILE...   (each file one resource: a Bundle, Consent, CapabilityStatement,
OperationOutcome, ...). Exit 0 when every file is a valid R4 resource, 1 otherwise, 2 when the
validator itself is unusable.

The models check structure, cardinality and primitive types, and refuse unknown elements. They do
not check required value-set bindings, so the codes the FHIR endpoint emits for bound elements are
checked here too.
"""

import json
import sys

try:
    import fhir.resources
    from fhir.resources import construct_fhir_element
except ImportError as error:  # pragma: no cover - environment problem
    print(f"fhir.resources is not installed: {error}", file=sys.stderr)
    sys.exit(2)

if fhir.resources.__fhir_version__ != "4.0.1":
    print(
        f"fhir.resources models FHIR {fhir.resources.__fhir_version__}, not R4 4.0.1",
        file=sys.stderr,
    )
    sys.exit(2)

# Required bindings of the elements the endpoint writes (FHIR R4 value sets).
CONSENT_STATUS = {"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"}
PROVISION_TYPE = {"deny", "permit"}
BUNDLE_TYPE = {
    "document", "message", "transaction", "transaction-response", "batch",
    "batch-response", "history", "searchset", "collection",
}
SEARCH_MODE = {"match", "include", "outcome"}


def check_bindings(resource, where):
    kind = resource.get("resourceType")
    if kind == "Consent":
        if resource.get("status") not in CONSENT_STATUS:
            raise ValueError(f"{where}: Consent.status {resource.get('status')!r}")
        provision = resource.get("provision") or {}
        if "type" in provision and provision["type"] not in PROVISION_TYPE:
            raise ValueError(f"{where}: Consent.provision.type {provision['type']!r}")
        # ppc-1..3: a policy or policy rule; a patient for privacy and research consents.
        if "policy" not in resource and "policyRule" not in resource:
            raise ValueError(f"{where}: ppc-1: neither policy nor policyRule")
        if "patient" not in resource:
            raise ValueError(f"{where}: ppc-2/3: no patient")
    elif kind == "Bundle":
        if resource.get("type") not in BUNDLE_TYPE:
            raise ValueError(f"{where}: Bundle.type {resource.get('type')!r}")
        for i, entry in enumerate(resource.get("entry") or []):
            mode = (entry.get("search") or {}).get("mode")
            if mode is not None and mode not in SEARCH_MODE:
                raise ValueError(f"{where}: Bundle.entry[{i}].search.mode {mode!r}")
            check_bindings(entry.get("resource") or {}, f"{where} entry[{i}]")


def main(paths):
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        try:
            construct_fhir_element(data.get("resourceType"), data)
            check_bindings(data, path)
        except Exception as error:  # the models raise pydantic's ValidationError
            print(f"{path}: not valid FHIR R4: {error}", file=sys.stderr)
            return 1
        print(f"{path}: valid FHIR R4 {data.get('resourceType')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
