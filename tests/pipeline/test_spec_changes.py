"""A resumed output refused for a changed spec names the fields that changed, without secrets."""

import json

from pipeline.core.payloads import Provenance
from pipeline.core.preflight import output_changes, recorded_spec
from pipeline.edit.spec import EditSpec
from pipeline.restore.spec import RestoreSpec


def spec(**task):
    return RestoreSpec.model_validate({
        "input": {"uri": "s3://faces/in/", "storage_options": {"key": "AKIDSECRET", "secret": "hunter22"}},
        "model": {"checkpoint": "https://models/e.pt?X-Amz-Signature=sig1&X-Amz-Credential=cred"},
        "output": {"uri": "s3://faces/out/"},
        "task": {"name": "denoise", "evaluate": True, **task},
    })


def provenance(job_spec, checkpoint_sha="ab" * 32):
    return Provenance(
        "restore", "e.pt", checkpoint_sha, 1, "celebs_denoise", 64, 10, 32, "torch float32", "float32", "float32",
        "0.1.0", job_spec.output_fingerprint(), job_fields={"restoration": job_spec.task.model_dump()},
        spec_fields=recorded_spec(job_spec),
    )


def test_changed_fields_are_named_with_both_values_once_each():
    before, after = spec(seed=1, amount=0.1), spec(seed=2, amount=0.1, noise="salt_and_pepper")
    previous = json.loads(json.dumps(provenance(before).to_json()))  # as _job.json holds it
    current = provenance(after, checkpoint_sha="cd" * 32)
    assert output_changes(previous, current.to_json(), current.matched) == [
        'task.noise: "gaussian" there, "salt_and_pepper" in this spec',
        "task.seed: 1 there, 2 in this spec",
        f'checkpoint_sha256: "{"ab" * 32}" there, "{"cd" * 32}" in this spec',
        # restoration.noise and restoration.seed repeat task.noise and task.seed: told once
    ]
    assert output_changes(previous, provenance(before).to_json(), current.matched) == []


def test_presigned_urls_and_storage_options_never_show_in_a_refusal_or_in_job_json():
    edit = EditSpec.model_validate({
        "input": {"uri": "/in/", "storage_options": {"key": "AKIDSECRET"}},
        "model": {"checkpoint": "https://models/e.pt?X-Amz-Signature=sig1&X-Amz-Credential=cred"},
        "output": {"uri": "/out/"},
        "edit": {"kind": "direction", "direction": "https://d/smile.npy?X-Amz-Signature=sig2", "strengths": [1]},
    })
    recorded = recorded_spec(edit)
    assert recorded["model"]["checkpoint"] == "https://models/e.pt?X-Amz-Signature=***&X-Amz-Credential=***"
    assert recorded["edit"]["direction"] == "https://d/smile.npy?X-Amz-Signature=***"
    assert not [s for s in ("sig1", "sig2", "cred", "AKIDSECRET") if s in json.dumps(recorded)]
    moved = edit.model_copy(update={"edit": edit.edit.model_copy(update={"direction": "https://d/frown.npy?X-Amz-Signature=sig3"})})
    lines = output_changes({"spec_sha256": "old", "spec": recorded}, {"spec_sha256": "new", "spec": recorded_spec(moved)},
                           ("spec_sha256",))
    assert lines == ['edit.direction: "https://d/smile.npy?X-Amz-Signature=***" there, '
                     '"https://d/frown.npy?X-Amz-Signature=***" in this spec']


def test_an_output_written_before_the_spec_was_recorded_says_a_field_changed():
    current = provenance(spec(seed=2))
    previous = json.loads(json.dumps(provenance(spec(seed=1)).to_json()))
    del previous["spec"]
    assert output_changes(previous, current.to_json(), current.matched) == [
        "a field of the spec's sections that decide the output changed (this output was written before _job.json "
        "recorded them, so which one cannot be told)",
        "restoration.seed: 1 there, 2 in this spec",  # the job's own fields were recorded, so they still tell
    ]


def test_the_same_fields_under_another_hash_say_the_fingerprint_changed():
    recorded = recorded_spec(spec())
    lines = output_changes({"spec_sha256": "old", "spec": recorded}, {"spec_sha256": "new", "spec": recorded},
                           ("spec_sha256",))
    assert lines == ["the spec's fingerprint changed (the same fields, hashed differently by another version of the job)"]
