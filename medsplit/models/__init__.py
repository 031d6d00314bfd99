"""Models as stage tables; ``build_model(name, ...)`` is the registry entry point."""

from medsplit.models.registry import MODELS, build_model
from medsplit.models.stages import PartSpec, Stage, StageTable

__all__ = ["MODELS", "build_model", "PartSpec", "Stage", "StageTable"]
