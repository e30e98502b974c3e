"""Where state is defined: records, channels, Redis keys, the Postgres schema."""
