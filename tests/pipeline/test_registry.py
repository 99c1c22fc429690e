"""Jobs register themselves with the generic core by name; the registry fails loudly and kinds hold no state."""

import pytest

import jobs.edit
import jobs.evaluate
import jobs.invert_dataset
import jobs.restore
import jobs.translate  # noqa: F401  (each command's module registers its job)
from pipeline.core.job import JOBS, JobKind, job_kind, register
from pipeline.edit.spec import EditSpec
from pipeline.evaluate.spec import EvaluateSpec
from pipeline.inversion.spec import InversionSpec
from pipeline.restore.spec import RestoreSpec
from pipeline.translate.spec import TranslateSpec


def test_every_job_is_registered_with_its_spec():
    assert {name: kind.spec_class for name, kind in JOBS.items()} == {
        "inversion": InversionSpec, "restore": RestoreSpec, "translate": TranslateSpec, "edit": EditSpec,
        "evaluate": EvaluateSpec,
    }
    assert job_kind("edit") is JOBS["edit"]


def test_an_unknown_or_second_job_of_a_name_is_refused():
    with pytest.raises(ValueError, match="unknown job 'train'; known: edit, evaluate, inversion, restore, translate"):
        job_kind("train")

    class Again(JobKind):
        name = "restore"

    with pytest.raises(ValueError, match="a job named 'restore' is already registered"):
        register(Again())
    assert type(JOBS["restore"]).__name__ == "RestoreJob"


def test_kinds_hold_no_state_so_one_instance_serves_every_run():
    assert all(vars(kind) == {} for kind in JOBS.values())


def test_the_restoration_table_is_what_the_spec_accepts_and_unknown_tasks_are_refused():
    import typing

    from pipeline.restore.spec import RestoreTaskSpec
    from pipeline.restore.tasks import TASKS, restoration_task

    assert typing.get_args(RestoreTaskSpec.model_fields["name"].annotation) == tuple(TASKS)
    with pytest.raises(ValueError, match="unknown restoration task 'deblur'; known: colorization, denoise, inpainting"):
        restoration_task("deblur")
    salt = RestoreTaskSpec(name="denoise", evaluate=True, noise="salt_and_pepper", amount=0.1)
    assert salt.degradation() == {"noise": "salt_and_pepper", "amount": 0.1}
    assert RestoreTaskSpec(name="super_resolution", evaluate=True, factor=4).degradation() == {"factor": 4}
    assert RestoreTaskSpec(name="inpainting").degradation() == {}
    assert restoration_task("super_resolution").size_problem(RestoreTaskSpec(name="super_resolution", factor=3), 32)
    assert restoration_task("super_resolution").size_problem(RestoreTaskSpec(name="super_resolution", factor=4), 32) is None


def test_the_edit_kinds_are_what_the_spec_accepts_and_each_says_its_rows():
    import typing

    from pipeline.edit.kinds import EDIT_KINDS, edit_kind
    from pipeline.edit.spec import EditSectionSpec

    assert typing.get_args(EditSectionSpec.model_fields["kind"].annotation) == tuple(EDIT_KINDS)
    with pytest.raises(ValueError, match="unknown edit kind 'warp'; known: direction, mixing, interpolation, face_swap"):
        edit_kind("warp")
    pairs = [["a", "b"], ["a", "c"], ["d", "a"]]
    interpolation = EditSectionSpec(kind="interpolation", pairs=pairs, steps=1)
    kind = edit_kind("interpolation")
    assert kind.records(interpolation) == {"a", "d"}
    assert [v for v, _, _ in kind.outputs(interpolation, "a")] == ["to-b-0", "to-b-1", "to-b-2", "to-c-0", "to-c-1", "to-c-2"]
    assert kind.partners(interpolation, {"a"}) == ["b", "c"]
    assert kind.params(interpolation, "b", 1) == {"end": "b", "step": 1, "t": 0.5}
    swap = EditSectionSpec(kind="face_swap", pairs=pairs)
    assert edit_kind("face_swap").records(swap) == {"b", "c", "a"} and edit_kind("face_swap").pastes_images
    assert edit_kind("face_swap").outputs(swap, "a") == [("from-d", "d", None)]
    direction = EditSectionSpec(kind="direction", direction="d.npy", strengths=[-1, 2.5])
    assert edit_kind("direction").records(direction) is None
    assert edit_kind("direction").outputs(direction, "x") == [("s-1", None, -1), ("s+2.5", None, 2.5)]
    assert list(edit_kind("direction").default_layers(18)) == list(range(8))
    assert list(edit_kind("mixing").default_layers(18)) == list(range(10, 18))
    with pytest.raises(ValueError, match="steps does not apply to kind mixing"):
        EditSectionSpec(kind="mixing", styles=["s"], steps=3)


def test_the_input_formats_are_what_the_spec_accepts_and_say_where_their_records_are():
    import typing

    from pipeline.core.formats import FORMATS, input_format
    from pipeline.core.shards import InputError, Record, Shard, list_shards
    from pipeline.core.spec import InputSpec

    assert typing.get_args(InputSpec.model_fields["format"].annotation) == tuple(FORMATS)
    with pytest.raises(InputError, match="unknown input format 'csv'; known: images, webdataset, parquet"):
        list_shards("/nowhere", "csv", 4, {})
    images = Shard(0, "images", records=(Record("a.png", "/x/a.png"), Record("b.png", "/x/b.png")))
    assert input_format("images").only(images, frozenset({"b.png"})).records == (Record("b.png", "/x/b.png"),)
    assert input_format("images").recorded(images) == {"inputs": ["a.png", "b.png"]}
    tar = Shard(1, "webdataset", source="s3://u:p@b/t.tar", size=10, version="e1", key="t.tar")
    assert input_format("webdataset").only(tar, frozenset({"t.tar/a"})) is tar
    assert input_format("webdataset").recorded(tar) == {"source": "s3://b/t.tar", "key": "t.tar", "size": 10, "version": "e1"}
    assert [f.name for f in FORMATS.values() if f.keys_from_column] == ["parquet"]


def test_the_translations_are_what_the_spec_accepts():
    import typing

    from pipeline.translate.spec import TranslateTaskSpec
    from pipeline.translate.steps import TRANSLATIONS, translation

    assert typing.get_args(TranslateTaskSpec.model_fields["name"].annotation) == tuple(TRANSLATIONS)
    assert {name: t.channels for name, t in TRANSLATIONS.items()} == {"sketch_to_face": 1, "segmentation_to_face": 19}
    with pytest.raises(ValueError, match="unknown translation 'photo_to_face'; known: sketch_to_face, segmentation_to_face"):
        translation("photo_to_face")
