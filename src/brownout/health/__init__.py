"""Health and degradation: component scores, one system score, five levels, features, settings.

>>> from brownout.health import DegradationManager, Component, Feature, Level
"""

from brownout._errors import UnknownFeature
from brownout.health._events import ComponentView, Evaluation, Transition
from brownout.health._manager import DegradationManager
from brownout.health._model import (
    DEFAULT_IMPACT,
    DEFAULT_RULES,
    DEFAULT_SETTINGS,
    DEFAULT_THRESHOLDS,
    DEFAULT_WEIGHTS,
    Component,
    Feature,
    Level,
    LevelRule,
    LevelSettings,
    Probe,
    seed_features,
)
from brownout.health._scoring import ComponentInputs, ComponentScore, score_component
from brownout.health._trends import TrendRecorder, level_impacts

__all__ = [
    "DEFAULT_IMPACT",
    "DEFAULT_RULES",
    "DEFAULT_SETTINGS",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_WEIGHTS",
    "Component",
    "ComponentInputs",
    "ComponentScore",
    "ComponentView",
    "DegradationManager",
    "Evaluation",
    "Feature",
    "Level",
    "LevelRule",
    "LevelSettings",
    "Probe",
    "Transition",
    "TrendRecorder",
    "UnknownFeature",
    "level_impacts",
    "score_component",
    "seed_features",
]
