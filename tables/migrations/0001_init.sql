-- Current snapshot of every match, upserted by the Postgres sink (highest seq wins).
CREATE TABLE matches (
    id          text PRIMARY KEY,
    sport       text NOT NULL,
    league_id   text NOT NULL,
    phase       text NOT NULL,
    start_time  timestamptz NOT NULL,
    seq         bigint NOT NULL,
    snapshot    jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX matches_sport_phase ON matches (sport, phase);
CREATE INDEX matches_league ON matches (sport, league_id, start_time);
CREATE INDEX matches_start ON matches (start_time);

-- Every delta ever emitted; a redelivered delta is a no-op thanks to the primary key.
CREATE TABLE match_deltas (
    match_id    text NOT NULL,
    seq         bigint NOT NULL,
    ts          timestamptz NOT NULL,
    kinds       text[] NOT NULL,
    delta       jsonb NOT NULL,
    PRIMARY KEY (match_id, seq)
);
CREATE INDEX match_deltas_ts ON match_deltas (ts);
