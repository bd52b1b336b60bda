"""What an AWS service answered, read the same way for each one we call (S3 for recordings and
archives, SQS as a destination): the status and error code, and whether it is worth another try.
Each caller still words its own error, since what failed (a recording, a queue) differs."""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

# AWS's "slow down" codes (S3's and the other services'): transient like a 5xx.
THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "RequestTimeout",
             "ServiceUnavailable", "429"}  # fmt: skip
# No request went out, or none came back: another try may get through.
UNREACHABLE = (ConnectionError, HTTPClientError)
# Nothing to sign with: no retry helps until someone configures credentials.
NO_CREDENTIALS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)


def aws_answer(exc: ClientError) -> tuple[int, str]:
    """The HTTP status (0 when none) and the error code an AWS service answered with."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return int(status), str(exc.response.get("Error", {}).get("Code", ""))


def worth_retrying(status: int, code: str) -> bool:
    """A server error or a throttle: the same request may succeed later."""
    return status >= 500 or code in THROTTLED
