"""The audit bundle's file layout, declared once: `bundle` writes it and `verify` reads it.

All paths are relative to the bundle folder and use `/`:

  README.md                what is inside and how to verify it
  study/                   study.toml, the matrix, published summaries, outside decisions
  results/runs.csv|json    the run table, scrubbed (no paths, owners, logs or raw summaries)
  frozen/<gate>.json       every freeze/amend record: canonical JSON and its sha256
  recipes/recipes.json     sha256 -> resolved recipe, for every recipe a run recorded
  decisions/decisions.json every decision (computed and manual, withdrawn ones too)
  tables/<name>.csv|json   every report table (gate analyses, sensitivity, budget, ...)
  figures/<name>.png|svg   every figure (with its data files beside it)
  ledger/events.json       the event log (scrubbed: each field's sha256 kept) and the chain head
  ledger/commitments.json  sha256 of every renamed id and scrubbed text (to prove them against
                           the chain without revealing them)
  table_manifest.json      table -> files, sources and command
  figure_manifest.json     figure -> files, sources and command
  MANIFEST.json|csv        path, bytes and sha256 of every other file

Changing a name here changes the bundle format: a bundle written before no longer verifies.
"""

from __future__ import annotations

__all__ = [
    "COMMITMENTS_JSON",
    "DECISIONS_JSON",
    "EVENTS_JSON",
    "FIGURES_DIR",
    "FIGURE_MANIFEST",
    "FROZEN_DIR",
    "MANIFESTS",
    "MANIFEST_CSV",
    "MANIFEST_JSON",
    "OUTSIDE_FILES",
    "README_MD",
    "RECIPES_JSON",
    "RUNS_CSV",
    "RUNS_JSON",
    "STUDY_DIR",
    "STUDY_TOML",
    "TABLES_DIR",
    "TABLE_MANIFEST",
    "figure_files",
    "frozen_file",
    "table_csv",
    "table_json",
]

README_MD = "README.md"
MANIFEST_JSON = "MANIFEST.json"
MANIFEST_CSV = "MANIFEST.csv"
MANIFESTS = (MANIFEST_JSON, MANIFEST_CSV)  # list every other file, so they list not themselves
STUDY_DIR = "study"
STUDY_TOML = f"{STUDY_DIR}/study.toml"
RUNS_CSV = "results/runs.csv"
RUNS_JSON = "results/runs.json"
FROZEN_DIR = "frozen"
RECIPES_JSON = "recipes/recipes.json"
DECISIONS_JSON = "decisions/decisions.json"
TABLES_DIR = "tables"
FIGURES_DIR = "figures"
EVENTS_JSON = "ledger/events.json"
COMMITMENTS_JSON = "ledger/commitments.json"
TABLE_MANIFEST = "table_manifest.json"
FIGURE_MANIFEST = "figure_manifest.json"
# Study-folder files besides study.toml and the matrix that a bundle carries when present.
OUTSIDE_FILES = ("outside_decisions.toml",)


def frozen_file(gate_id: str) -> str:
    return f"{FROZEN_DIR}/{gate_id}.json"


def table_csv(name: str) -> str:
    return f"{TABLES_DIR}/{name}.csv"


def table_json(name: str) -> str:
    return f"{TABLES_DIR}/{name}.json"


def figure_files(name: str) -> list[str]:
    """The drawn files of a figure (its data files are listed by the figure itself)."""
    return [f"{FIGURES_DIR}/{name}.png", f"{FIGURES_DIR}/{name}.svg"]
