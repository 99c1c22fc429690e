"""The evaluation job's checks and work: a checkpoint's inversion quality per stage on the user's images
(``pipeline.evaluate.steps`` on CPU workers, ``pipeline.evaluate.model`` in the actors, the report at the
end: ``pipeline.evaluate.report``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engines import checkpoint_sha256
from engines.directions import DirectionError, load_direction
from engines.metric_weights import MetricWeightsError, load_metric_net
from operators.e2style import E2Style, E2StyleConfig
from operators.edits import direction_layers
from operators.metrics import MS_SSIM_WEIGHTS
from pipeline.core.decode import DecodeImages
from pipeline.core.errors import PreflightError, reason
from pipeline.core.job import Checked, JobKind, Plan, Work, check_task, input_args, register
from pipeline.core.payloads import ShardStats, part_of_rows
from pipeline.core.report import counted
from pipeline.core.secrets import redact_uri
from pipeline.evaluate.model import EditDirection, EvaluateModel, MetricWeights
from pipeline.evaluate.report import REPORT_FILES, write_report
from pipeline.evaluate.spec import EditQualitySpec, EvaluateSpec
from pipeline.evaluate.steps import RANKINGS, WriteEvaluation, join_evaluated

MS_SSIM_MIN_SIZE = 11 * 2 ** (len(MS_SSIM_WEIGHTS) - 1)  # the 11x11 window at the coarsest of 5 scales
PUBLISHED = {  # the published file each network metric loads (README: Evaluating a checkpoint)
    "lpips": "[alexnet-owt-7be5be79.pth, alex.pth] from torchvision and the LPIPS repository",
    "identity": "model_ir_se50.pth",
    "fid": "pt_inception-2015-12-05-6726825d.pth",
}


def parameter_counts(cfg: E2StyleConfig) -> dict[str, object]:
    """Parameters of each stage's encoder (those that run: the fourth block the files store never does),
    as stored, and of the generator, counted on a model built without memory."""
    with torch.device("meta"):
        model = E2Style(cfg)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    encoders = [model.encoder_firststage, *model.encoder_refinestage_list]
    tapped = sum(cfg.encoder.block_units[:3])
    return {
        "encoder_run": [count(e) - count(e.body[tapped:]) for e in encoders],
        "encoder_stored": [count(e) for e in encoders],
        "generator": count(model.decoder),
    }


@dataclass(frozen=True)
class EvaluateFindings:
    """What the evaluation's checks found for its work."""

    networks: tuple[MetricWeights, ...]  # where each network metric's weights are, with their sha256
    edit: EditDirection | None  # evaluate.edit's direction as preflight loaded it, its layers resolved


class EvaluateJob(JobKind):
    name = "evaluate"
    verb = "evaluated"
    spec_class = EvaluateSpec
    finish_files = REPORT_FILES

    def check(self, spec: EvaluateSpec, cfg, info, shards) -> Checked:
        check_task(spec, info, "inversion")
        if cfg.input_channels != 3:
            raise PreflightError(
                f"model.checkpoint: {spec.model.checkpoint} takes {cfg.input_channels}-channel input, not RGB images"
            )
        stages = spec.evaluate.stages or list(range(1, cfg.stages + 1))
        if stages[-1] > cfg.stages:
            raise PreflightError(
                f"evaluate.stages: stage {stages[-1]} asked for, but the model runs {counted(cfg.stages, 'stage')} "
                "(model.stages, or every stage the checkpoint holds)"
            )
        metrics = spec.metrics
        if "ms_ssim" in metrics.compute and cfg.image_size < MS_SSIM_MIN_SIZE:
            raise PreflightError(
                f"metrics.compute: ms_ssim needs images of at least {MS_SSIM_MIN_SIZE} px (5 scales of 11x11 windows), "
                f"and the model's are {cfg.image_size} px; remove ms_ssim from metrics.compute"
            )
        networks = [self._network(spec, metric) for metric in metrics.network_metrics()]
        evaluation = {
            "metrics": list(metrics.compute),
            "stages": stages,
            "precisions": list(spec.evaluate.precisions),
            "best_worst": spec.evaluate.best_worst,
            "networks": {n.metric: {"network": network, "sha256": n.sha256} for n, network in networks},
        }
        edit = None
        if spec.evaluate.edit is not None:
            edit, evaluation["edit"] = self._edit(spec.evaluate.edit, cfg)
        return Checked(
            {"evaluation": evaluation, "parameters": parameter_counts(cfg)},
            found=EvaluateFindings(tuple(n for n, _ in networks), edit),
        )

    def _edit(self, section: EditQualitySpec, cfg) -> tuple[EditDirection, dict]:
        """evaluate.edit's direction loaded and checked against the generator (as the edit job loads its
        own), its layers resolved, and what the provenance records of it."""
        num_ws = cfg.num_ws
        try:
            direction = load_direction(section.direction, num_ws, cfg.style_dim, section.direction_storage_options)
            sha256 = checkpoint_sha256(section.direction, section.direction_storage_options)
        except (DirectionError, ValueError) as e:
            raise PreflightError(f"evaluate.edit.direction: {e}") from e
        except Exception as e:
            where = redact_uri(section.direction)
            raise PreflightError(f"evaluate.edit.direction: cannot read {where}: {reason(e)}") from e
        layers = tuple(section.layers if section.layers is not None else direction_layers(num_ws))
        outside = [layer for layer in layers if layer >= num_ws]
        if outside:
            raise PreflightError(
                f"evaluate.edit.layers: {outside} outside 0..{num_ws - 1} (this generator has {num_ws} W+ layers)"
            )
        strengths = tuple(section.strengths)
        recorded = {"direction_sha256": sha256, "strengths": list(strengths), "layers": list(layers)}
        return EditDirection(direction, strengths, layers), recorded

    def _network(self, spec: EvaluateSpec, metric: str) -> tuple[MetricWeights, str]:
        """Load a network metric's weights as the actors will (every key checked) for their sha256."""
        section = getattr(spec.metrics, metric)
        field = f"metrics.{metric}.weights"
        if section.weights is None:
            raise PreflightError(
                f"{field}: {metric} is in metrics.compute but no weights are given; set it to the published file "
                f"({PUBLISHED[metric]}; see the README, Evaluating a checkpoint) or remove {metric} from "
                "metrics.compute"
            )
        net = getattr(section, "net", None)
        weights = section.weights if isinstance(section.weights, str) else tuple(section.weights)
        try:
            loaded = load_metric_net(metric, weights, section.storage_options, net)
        except MetricWeightsError as e:
            raise PreflightError(f"{field}: {e}") from e
        except Exception as e:
            where = ", ".join(map(redact_uri, [weights] if isinstance(weights, str) else weights))
            raise PreflightError(f"{field}: cannot load {where}: {reason(e)}") from e
        return MetricWeights(metric, weights, dict(section.storage_options), net, loaded.sha256), loaded.network

    def rows_per_record(self, spec: EvaluateSpec, key: str) -> int:
        return 1 + len(spec.evaluate.precisions)

    def work(self, plan: Plan) -> Work:
        spec: EvaluateSpec = plan.spec
        evaluation = plan.provenance.job_fields["evaluation"]
        stages = tuple(evaluation["stages"])
        rankings = tuple(m for m in RANKINGS if m in spec.metrics.compute)
        model = EvaluateModel(
            metrics=tuple(spec.metrics.compute),
            stages=stages,
            networks=plan.found.networks,
            precisions=tuple(spec.evaluate.precisions),
            checkpoint=spec.model.checkpoint,
            storage_options=dict(spec.model.storage_options),
            rankings=rankings,
            best_worst=spec.evaluate.best_worst,
            edit=plan.found.edit,
        )
        out = spec.output
        best_worst = spec.evaluate.best_worst
        write = WriteEvaluation(plan.provenance, out.latent_dtype, out.row_group_size, stages, rankings, best_worst)
        prepare = DecodeImages(plan.provenance.image_size, input_args(spec))
        return Work(prepare, model, write, part_of_rows, join_evaluated)

    def finish(self, plan: Plan, stats: list[ShardStats]) -> None:
        write_report(plan, stats)


EVALUATE = register(EvaluateJob())
