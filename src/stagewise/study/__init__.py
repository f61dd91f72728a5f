"""Study files: `study.toml` + matrix, loaded into frozen dataclasses."""

from stagewise.study.load import STUDY_FILE, load_study
from stagewise.study.model import Candidates, Condition, Gate, Host, Rule, Stage, Study

__all__ = [
    "STUDY_FILE",
    "Candidates",
    "Condition",
    "Gate",
    "Host",
    "Rule",
    "Stage",
    "Study",
    "load_study",
]
