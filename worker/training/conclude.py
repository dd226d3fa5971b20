"""The end of a run: the best checkpoint evaluated as served, WiSE-FT, calibration, the report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from app.jobs.event_types import EventType
from app.ml.model_metadata import ModelMetadata, read_metadata, write_metadata
from worker.training.calibration import Calibration, calibrate
from worker.training.checkpoints.folder import TrainerState
from worker.training.evaluate import EvalResult
from worker.training.inputs.control import control_accuracy
from worker.training.progress import Notice, RunResult
from worker.training.report import build_report, result_summary
from worker.training.session import RunSession, evaluate_served
from worker.training.wise_ft import (
    WISE_FT_DIR_NAME,
    MixScore,
    ServedModel,
    base_for_mixing,
    choose,
    load_served,
    mix,
    write_mix,
)


def conclude(session: RunSession, state: TrainerState) -> RunResult:
    """Evaluate the best checkpoint as served, try WiSE-FT mixes, fit the temperature on val,
    write the report."""
    assert state.best_checkpoint is not None, "every epoch writes a checkpoint"
    best_folder = session.out_dir / state.best_checkpoint
    served, metadata = load_served(best_folder, session.device)
    final, control_after = score_served(session, served)
    chosen, alpha, curve = best_folder, None, None
    if session.config.wise_ft_alphas:
        outcome = search_wise_ft(session, served, metadata, final, control_after)
        curve = outcome.curve
        if outcome.folder is not None and outcome.result is not None:
            chosen, alpha = outcome.folder, outcome.alpha
            final, control_after = outcome.result, outcome.control_accuracy
    best_entry = state.entry_for(state.best_checkpoint)
    calibration = calibrate_served(session, final)
    report = build_report(
        kind=session.manifest.kind,
        method=session.method.name,
        base=state.baseline.get("val", {"metrics": {}}),
        fine_tuned=result_summary(final),
        best_epoch=best_entry.get("epoch"),
        epochs_trained=state.epoch,
        stopped_early=state.stopped_early,
        control_before=state.baseline.get("control_accuracy"),
        control_after=control_after,
        wise_ft=curve,
        wise_ft_alpha=alpha,
        classes=session.manifest.classes,
        trainable_parameters=state.trainable_parameters,
        calibration=calibration.report if calibration else None,
    )
    write_metadata(
        chosen,
        dataclasses.replace(
            read_metadata(chosen),
            report=report,
            temperature=calibration.temperature if calibration else None,
            min_confidence=calibration.min_confidence if calibration else None,
        ),
    )
    return RunResult(
        stopped=False,
        best_checkpoint=chosen,
        best_metrics={**best_entry, **final.metrics},
        history=state.history,
        report=report,
    )


def calibrate_served(session: RunSession, final: EvalResult) -> Calibration | None:
    """The temperature and default threshold of the registered model, from its val logits."""
    if final.logits is None or final.targets is None or not len(final.targets):
        return None
    return calibrate(final.logits, final.targets, target_precision=session.config.target_precision)


def score_served(session: RunSession, served: ServedModel) -> tuple[EvalResult, float | None]:
    """Weights as serving loads them, on val and (zero-shot) on the control set."""
    return (
        evaluate_served(session, served),
        control_accuracy(session.evaluator_for(served.loaded), session.control),
    )


@dataclass
class WiseOutcome:
    curve: list[dict[str, float | None]]
    # Set when a mix beat the fine-tuned model on val; it is then the model registered.
    folder: Path | None = None
    alpha: float | None = None
    result: EvalResult | None = None
    control_accuracy: float | None = None


def search_wise_ft(
    session: RunSession,
    served: ServedModel,
    metadata: ModelMetadata,
    final: EvalResult,
    control_after: float | None,
) -> WiseOutcome:
    """Score each alpha's mix on val and the control set; write the winner if it is a mix."""
    base = base_for_mixing(session.config, served, session.task, session.device)

    def score(alpha: float) -> MixScore:
        result, control = score_served(session, mix(base, served, alpha))
        return MixScore(alpha, result.metrics, control, result)

    scores = [score(alpha) for alpha in session.config.wise_ft_alphas]
    fine_tuned = MixScore(1.0, final.metrics, control_after, final)
    winner = choose(scores, fine_tuned, session.metric_name)
    curve = [
        {"alpha": item.alpha, **item.metrics, "control_zero_shot_accuracy": item.control_accuracy}
        for item in sorted([*scores, fine_tuned], key=lambda item: item.alpha)
    ]
    session.callbacks.on_notice(
        Notice(
            EventType.WISE_FT,
            f"WiSE-FT: alpha {winner.alpha:g} is the best by {session.metric_name}",
            {"alpha": winner.alpha, "curve": curve},
        )
    )
    if winner is fine_tuned:
        return WiseOutcome(curve=curve)
    folder = write_mix(
        mix(base, served, winner.alpha),
        metadata,
        winner.alpha,
        session.out_dir / WISE_FT_DIR_NAME,
    )
    return WiseOutcome(
        curve=curve,
        folder=folder,
        alpha=winner.alpha,
        result=winner.details,
        control_accuracy=winner.control_accuracy,
    )
