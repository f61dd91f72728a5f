"""Gates: the rule registry and rules, freezing, evaluation, decisions, sensitivity, budget.

Modules are imported directly (`stagewise.gates.freeze`, `.decide`, ...); the top-level
`stagewise` namespace re-exports the public functions lazily.
"""
