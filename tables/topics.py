"""Topic names and their settings (the partner contract lists the same)."""

from __future__ import annotations

RAW_FETCHES = "raw-fetches"
MATCH_UPDATES = "match-updates"
MATCH_DELTAS = "match-deltas"
MATCH_SNAPSHOTS = "match-snapshots"
DEAD_LETTERS = "dead-letters"
ALERTS = "alerts"

#: Topics whose records are keyed by match id and partitioned alike.
KEYED_BY_MATCH = (MATCH_UPDATES, MATCH_DELTAS, MATCH_SNAPSHOTS)

#: Extra broker settings per topic.
TOPIC_CONFIG: dict[str, dict[str, str]] = {
    MATCH_SNAPSHOTS: {"cleanup.policy": "compact"},
    MATCH_DELTAS: {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000)},
    RAW_FETCHES: {"cleanup.policy": "delete", "retention.ms": str(24 * 3600 * 1000)},
    DEAD_LETTERS: {"cleanup.policy": "delete", "retention.ms": str(14 * 24 * 3600 * 1000)},
}
