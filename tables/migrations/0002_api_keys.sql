-- API keys: only a hash of the secret is stored; the key is shown once at creation.
CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    tier        text NOT NULL,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_revoked ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;

-- Usage per key and minute, added to by every edge.
CREATE TABLE key_usage (
    key_id          text NOT NULL,
    minute          timestamptz NOT NULL,
    requests        bigint NOT NULL DEFAULT 0,
    bytes           bigint NOT NULL DEFAULT 0,
    stream_seconds  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, minute)
);
