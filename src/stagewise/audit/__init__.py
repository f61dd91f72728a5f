"""The audit trail: what a reviewer who has only the bundle checks.

`bundle` writes a study's scrubbed results, frozen rules, decisions, tables, figures and event
chain with manifests (`layout` names every file); `verify` re-hashes it, re-links the chain and
re-derives every table and figure with the report's own code. One layer above the report:
verify may read the report, the report never reads the audit trail.
"""
