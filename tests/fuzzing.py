"""What every fuzz of an OpenAPI document checks (the intake's in test_fuzz.py, the console's in
test_fuzz_console.py)."""

import schemathesis

CONFORMANCE = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]
