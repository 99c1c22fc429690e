"""Write the bundled samples' models and a spec for every job: tiny seeded E2Style checkpoints in the official format.

    python -m jobs.make_sample [--into outputs/sample] [--specs samples/specs]

Into ``<into>/model/``: the inversion model ``e2style-tiny-64-stage2.pt`` (2 stages), one 1-stage model
per restoration and translation task (``e2style-tiny-64-<task>.pt``, its ``opts['dataset_type']`` that
task's), ``direction.npy``, a latent direction for the edit sample, and the evaluation sample's metric
networks (``untrained-*.pth``: seeded random weights in the published layouts, untrained). Into
``--specs``: one spec per job and task (``invert.yaml``, ``restore-<task>.yaml``, ``translate-<task>.yaml``,
``edit-<kind>.yaml``, ``evaluate.yaml``) over the bundled inputs (``samples/faces/``, ``sketches/``,
``labels/``), each writing to ``<into>/<spec name>/``. The edit specs read the codes ``invert.yaml``
writes, so run it first.

The models are untrained (seeded random weights): the jobs run the whole path from files to committed
output, but every picture they make is a colour blob, not a face. Paths in the specs are absolute, so a
spec runs from any directory and under ``ray job submit`` (whose working directory is Ray's copy of the
submitted folder). Running it again leaves existing models alone and rewrites the specs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from engines import official_checkpoint, write_checkpoint
from operators.e2style import E2Style
from operators.presets import get_preset
from pipeline.core.job import TASK_DATASET_TYPES, JobKind
from pipeline.edit.job import EDIT
from pipeline.evaluate.job import EVALUATE
from pipeline.evaluate.samples import sample_sections, write_sample_metric_weights
from pipeline.inversion.job import INVERSION
from pipeline.restore.job import RESTORE
from pipeline.restore.tasks import TASKS
from pipeline.translate.job import TRANSLATE
from pipeline.translate.steps import TRANSLATIONS

SAMPLE_PRESET = "tiny-64"
SAMPLE_STAGES = 2
SAMPLE_SEED = 0
REPOSITORY = Path(__file__).resolve().parents[1]
SAMPLES = REPOSITORY / "samples"
DEFAULT_INTO = REPOSITORY / "outputs" / "sample"
DEFAULT_SPECS = SAMPLES / "specs"
INVERSION_MODEL = "e2style-tiny-64-stage2.pt"
RESOURCES = {"num_actors": 1, "batch_size": 8}
# The task parameters a sample needs beyond the defaults (super-resolution's evaluation needs its factor;
# 4 fits the tiny model's 32 px images).
TASK_PARAMETERS = {"super_resolution": {"factor": 4}}
# The bundled inputs of each translation, under samples/ (drawn by samples/make_faces.py).
TRANSLATION_INPUTS = {"sketch_to_face": "sketches", "segmentation_to_face": "labels"}
# Keys of the bundled faces that the edit samples pair up.
FACES = [f"face_{i:02d}.png" for i in range(6)]


def sample_model(stages: int = SAMPLE_STAGES, input_channels: int = 3, seed: int = SAMPLE_SEED) -> E2Style:
    torch.manual_seed(seed)
    config = dataclasses.replace(get_preset(SAMPLE_PRESET), stages=stages, input_channels=input_channels)
    model = E2Style(config).eval()
    with torch.no_grad():  # latent_avg is the mean mapped w, as for a real StyleGAN2
        mean_w = model.decoder.mean_latent(4096, generator=torch.Generator().manual_seed(seed))
        model.latent_avg.copy_(mean_w.expand_as(model.latent_avg))
    return model


def task_models() -> dict[str, tuple[int, int]]:
    """(input channels, seed) of each task's sample model, by task name."""
    names = [*TASKS, *TRANSLATIONS]
    channels = {name: TRANSLATIONS[name].channels if name in TRANSLATIONS else 3 for name in names}
    return {name: (channels[name], SAMPLE_SEED + 1 + i) for i, name in enumerate(names)}


def write_models(model_dir: Path) -> list[Path]:
    """The sample checkpoints and the direction, skipping those already there; returns the new files."""
    model_dir.mkdir(parents=True, exist_ok=True)
    written = []
    inversion = model_dir / INVERSION_MODEL
    if not inversion.exists():
        write_checkpoint(official_checkpoint(sample_model()), str(inversion))
        written.append(inversion)
    for task, (channels, seed) in task_models().items():
        path = model_dir / f"e2style-tiny-64-{task}.pt"
        if not path.exists():
            model = sample_model(stages=1, input_channels=channels, seed=seed)
            write_checkpoint(official_checkpoint(model, task=TASK_DATASET_TYPES[task]), str(path))
            written.append(path)
    direction = model_dir / "direction.npy"
    if not direction.exists():
        style_dim = get_preset(SAMPLE_PRESET).generator.style_dim
        unit = np.random.default_rng(SAMPLE_SEED).standard_normal(style_dim)
        np.save(direction, (unit / np.linalg.norm(unit)).astype(np.float32))
        written.append(direction)
    written += write_sample_metric_weights(model_dir)
    return written


def sample_specs(into: Path) -> dict[str, tuple[JobKind, dict]]:
    """Each sample spec by file name: (the job that runs it, the spec)."""
    model_dir, faces = into / "model", f"{SAMPLES / 'faces'}/"

    def spec(name: str, input_section: dict, model: str, **sections) -> dict:
        return {"input": input_section, "model": {"checkpoint": str(model_dir / model)},
                "output": {"uri": f"{into / name}/"}, **sections, "resources": RESOURCES}

    specs = {"invert": (INVERSION, spec("invert", {"uri": faces, "shard_size": 4, "resize": True}, INVERSION_MODEL))}
    for task in TASKS:  # evaluation: each clean face is degraded as the task's training did, restored, scored
        task_section = {"name": task, "evaluate": True, **TASK_PARAMETERS.get(task, {})}
        specs[f"restore-{task}"] = (RESTORE, spec(
            f"restore-{task}", {"uri": faces, "resize": True}, f"e2style-tiny-64-{task}.pt", task=task_section
        ))
    for task in TRANSLATIONS:
        specs[f"translate-{task}"] = (TRANSLATE, spec(
            f"translate-{task}", {"uri": f"{SAMPLES / TRANSLATION_INPUTS[task]}/"}, f"e2style-tiny-64-{task}.pt",
            task={"name": task},
        ))
    latents = {"latents": f"{into / 'invert'}/"}
    edits = {
        "direction": (latents, {"direction": str(model_dir / "direction.npy"), "strengths": [-6, 0, 6]}),
        # The tiny generator has 10 W+ layers: the style's last five replace each face's.
        "mixing": (latents, {"styles": [FACES[5]], "layers": [5, 6, 7, 8, 9]}),
        "interpolation": (latents, {"pairs": [[FACES[0], FACES[1]], [FACES[2], FACES[3]]], "steps": 3}),
        "face_swap": ({"uri": faces, "resize": True}, {"pairs": [[FACES[4], FACES[0]]]}),
    }
    for kind, (input_section, fields) in edits.items():
        specs[f"edit-{kind}"] = (EDIT, spec(
            f"edit-{kind}", input_section, INVERSION_MODEL, edit={"kind": kind, **fields}
        ))
    specs["evaluate"] = (EVALUATE, spec(
        "evaluate", {"uri": faces, "shard_size": 4, "resize": True}, INVERSION_MODEL, **sample_sections(model_dir)
    ))
    return specs


HEADER = """\
# A sample {job} spec, written by `python -m jobs.make_sample`; run it with
#     python -m jobs.{module} {path}
# The model is untrained (seeded random weights), so every picture it makes is a colour blob: the run
# checks the whole path from files to committed output, not the quality. Paths are absolute, so the spec
# runs from any directory and under `ray job submit`.
"""
MODULES = {
    INVERSION.name: "invert_dataset", RESTORE.name: "restore", TRANSLATE.name: "translate", EDIT.name: "edit",
    EVALUATE.name: "evaluate",
}


def write_specs(into: Path, spec_dir: Path) -> list[Path]:
    spec_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (kind, spec) in sample_specs(into).items():
        kind.spec_class.model_validate(spec)  # a sample that would not validate is this program's bug
        path = spec_dir / f"{name}.yaml"
        header = HEADER.format(job=kind.name, module=MODULES[kind.name], path=path)
        path.write_text(header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.make_sample", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--into", type=Path, default=DEFAULT_INTO, help="folder of the models and the jobs' outputs (default: %(default)s)"
    )
    parser.add_argument("--specs", type=Path, default=DEFAULT_SPECS, help="folder of the sample specs (default: %(default)s)")
    args = parser.parse_args(argv)
    into = args.into.resolve()
    written = write_models(into / "model")
    specs = write_specs(into, args.specs.resolve())
    print(f"sample models in {into / 'model'} " + (f"({len(written)} files written)" if written else "(there already)"))
    print(f"{len(specs)} sample specs in {args.specs}: " + ", ".join(p.name for p in specs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
