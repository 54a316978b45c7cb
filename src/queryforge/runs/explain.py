"""A second visitor over the same stages: explain what a run would do, without doing it."""

from __future__ import annotations

from .plan import CheckStage, ExecutionPlan, ExtractStage, PublishStage, Stage, StageLoadStage, TransformStage


def explain(plan: ExecutionPlan, dialect: str = "duckdb") -> list[dict[str, str]]:
    """One entry per stage: id, kind and what it runs (SQL in the engine's dialect)."""
    return [{"step": s.step_id, "stage": s.kind, "detail": _detail(s, dialect)} for s in plan.stages]


def _detail(stage: Stage, dialect: str) -> str:
    if isinstance(stage, ExtractStage):
        if stage.query is not None:
            return ("TABLE " if stage.materialize else "VIEW ") + stage.query.sql(dialect=dialect)
        r = stage.request
        assert r is not None
        what = r.query or (f"table {r.table}" if r.table else f"endpoint {r.endpoint}")
        since = f" where {stage.incremental.cursor} > the last published mark" if stage.incremental else ""
        return f"read {what}{since} from connection {stage.connection} as Arrow"
    if isinstance(stage, TransformStage):
        return ("TABLE " if stage.materialize else "VIEW ") + stage.query.sql(dialect=dialect)
    if isinstance(stage, CheckStage):
        return "; ".join(f"{r.severity} {r.name}" for r in stage.rules)
    if isinstance(stage, StageLoadStage):
        keys = f" on ({', '.join(stage.keys)})" if stage.keys else ""
        return (
            f"stage {stage.input} for {stage.mode}{keys} into {stage.target.connection}.{stage.target.table}"
        )
    if isinstance(stage, PublishStage):
        return f"publish {', '.join(stage.loads)} into {stage.connection} in one transaction"
    return ""
