"""Exports of a study into the tools a researcher already uses (MLflow)."""
