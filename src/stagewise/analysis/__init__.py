"""Pure analyses over plain run records: cells, ranks, statistics, agreement, sensitivity, budget.

No ledger and no I/O here; `stagewise.gates` feeds these functions and records their results.
"""
