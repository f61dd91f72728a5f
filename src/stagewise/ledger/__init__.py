from stagewise.ledger.integrity import canonical_json, sha256_text
from stagewise.ledger.records import DecisionRecord, Event, FreezeRecord, RunKey, RunRecord
from stagewise.ledger.store import LEDGER_FILE, Ledger, utc_now

__all__ = [
    "LEDGER_FILE",
    "DecisionRecord",
    "Event",
    "FreezeRecord",
    "Ledger",
    "RunKey",
    "RunRecord",
    "canonical_json",
    "sha256_text",
    "utc_now",
]
