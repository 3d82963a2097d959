"""The deployment template's output bucket: incomplete uploads are aborted and spilled tails expire (the writer's
FAILED chains keep their upload for resume; nobody may be left paying for them), and the writer functions may
write only there."""

from __future__ import annotations

from typing import Any

from tests.test_template import function_statements, grants, load, resource_texts


def test_the_output_bucket_aborts_incomplete_uploads_and_expires_spills() -> None:
    t = load()
    bucket = t["Resources"]["OutputBucket"]["Properties"]
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    abort: Any = rules["abort-incomplete-uploads"]
    assert abort["Status"] == "Enabled" and "Prefix" not in abort and "Filter" not in abort
    assert abort["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == {"Ref": "IncompleteUploadDays"}
    spills: Any = rules["expire-writer-spills"]
    assert spills["Prefix"] == "_recurse_lambda/writer/" and spills["ExpirationInDays"]
    from recurse_lambda.s3._writer import SPILL_PREFIX

    assert spills["Prefix"] == SPILL_PREFIX


def test_only_the_writer_functions_write_outputs_and_may_abort_their_uploads() -> None:
    t = load()
    for name in ("ProjectJsonlFunction", "ManifestFunction", "LineCountFunction"):
        statements = function_statements(t, name)
        aborts = set().union(*(resource_texts(s) for s in statements if grants(s, "s3:AbortMultipartUpload")))
        if name == "LineCountFunction":
            assert aborts == set()
        else:
            assert aborts == {"${OutputBucket.Arn}/*"}
