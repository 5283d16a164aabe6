"""schemathesis hooks for tests/spec_fuzz.rs (loaded through schemathesis.toml).

`positive_data_acceptance` fails a run when the server refuses a request the
spec allows. A few refusals of spec-valid requests are right, and no schema
can say so, because they depend on data or on another parameter:

- a `cursor` is valid only if this server signed it for this very query;
- `sort=relevance` needs a search (`q` with a word in it);
- a new issue's `organisation_ids` must exist, and a join's
  `organisation_id` (also the bot's `join_issue`) must be linked to the
  issue;
- a job's `batch_size` may be at most that job's own batch size (the spec
  can only give the largest, 500);
- `GET /api/issues/{id}/live` is a WebSocket: schemathesis's plain HTTP
  requests are answered 426 `upgrade_required` (tests/live.rs opens real
  sockets);
- an integer must be written as one: JSON Schema counts `480.0` as the
  integer 480, the server (serde_json's `as_i64`/`as_u64`, Rust's integer
  parsing of query values) refuses it. The spec says so in words.

`filter_failure` drops exactly those failures, recognised by what the server
answered (400 `validation_failed` naming the field, for the reason above)
and what was sent. Every other failure of every check stays, on every
operation; the run's summary counts the dropped ones, and with
`QR_FUZZ_DROPPED` set each is appended to that file (the reason, the
operation, the status), which tests/spec_fuzz.rs tallies.
"""

import json
import os
import re

import schemathesis

# Batch sizes of the jobs (src/jobs/mod.rs, `Job::batch_size`).
JOB_BATCH_SIZES = {
    "trending": 500,
    "reconcile_counts": 500,
    "archive_feed": 500,
    "health": 200,
    "countries": 100,
}


def _error(response):
    try:
        return json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return None


def _has_word(text):
    return any(c.isalnum() for c in str(text))


def _sent(case, field):
    """The value sent for `field` (`limit`, `params.limit`): query, then body."""
    query = case.query or {}
    if field in query:
        return query[field]
    value = case.body
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _integer_as_float(value):
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, str) and re.fullmatch(r"-?[0-9]+\.0*", value) is not None


def _explained(case, response):
    """Which of the rules above a refusal of spec-valid data is, if any."""
    error = _error(response)
    operation = f"{case.method.upper()} {case.operation.path}"
    if operation == "GET /api/issues/{id}/live" and response.status_code == 426:
        if error and error.get("code") == "upgrade_required":
            return "live: a plain request is not a WebSocket handshake"
    if response.status_code != 400 or not error or error.get("code") != "validation_failed":
        return None
    details = error.get("details") or {}
    field = details.get("field")
    query = case.query or {}
    body = case.body if isinstance(case.body, dict) else {}
    if field and _integer_as_float(_sent(case, field)):
        return f"{field}: an integer written with a fraction"
    if field == "cursor" and query.get("cursor") not in (None, ""):
        return "cursor: not signed by this server for this query"
    if operation == "GET /api/issues" and field == "sort":
        if query.get("sort") == "relevance" and not _has_word(query.get("q", "")):
            return "sort: relevance without a search"
    if operation == "POST /api/issues" and field == "organisation_ids":
        if details.get("unknown"):
            return "organisation_ids: no such organisation"
    # A join over HTTP, or the bot's join_issue.
    if operation in ("POST /api/issues/{id}/join", "POST /api/bot") and field == "organisation_id":
        if details.get("problem") == "is not an organisation responsible for this issue":
            return "organisation_id: not linked to the issue"
    if operation == "POST /api/admin/jobs/{name}" and field == "batch_size":
        own = JOB_BATCH_SIZES.get((case.path_parameters or {}).get("name"))
        size = body.get("batch_size")
        if own is not None and isinstance(size, int) and own < size <= 500:
            return "batch_size: above the job's own"
    return None


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if type(failure).__name__ != "RejectedPositiveData":
        return True
    reason = _explained(case, response)
    if reason is None:
        return True
    log = os.environ.get("QR_FUZZ_DROPPED")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{reason}\t{case.method.upper()} {case.operation.path}\t{response.status_code}\n")
    return False
