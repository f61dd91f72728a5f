"""Importers from experiment trackers into the curves table (`stagewise curves --from-...`).

history      what every source yields (RunHistory) and how runs become curves rows: condition
             ids from params, resumed steps, censored runs, the budget axis, the levels
mlflow_source      `--from-mlflow URI --experiment NAME`   (extra `stagewise[mlflow]`)
tensorboard_source `--from-tensorboard DIR`                (extra `stagewise[tensorboard]`)
wandb_source       `--from-wandb PATH`: a W&B history export (CSV, JSON lines, Parquet)

Each source imports its library inside its reader, so the base install only needs the library
of the source it uses; a missing one is a one-line error with the `pip install` to run.
"""
