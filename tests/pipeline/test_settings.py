import pytest

from pipeline.settings import Settings, SettingsError


def test_defaults_when_environment_is_empty():
    s = Settings.from_env({})
    assert s.kafka_url.startswith("kafka://")
    assert s.topic("match-deltas") == "match-deltas"


def test_values_are_read_from_the_environment():
    s = Settings.from_env({"KAFKA_URL": "kafka://b:1", "BTS_TOPIC_PREFIX": "x-", "EDGE_PORT": "9001"})
    assert s.kafka_bootstrap == "b:1"
    assert s.topic("raw-fetches") == "x-raw-fetches"
    assert s.edge_port == 9001


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAFKA_URL", "http://x:1"),
        ("REDIS_URL", "not a url"),
        ("DATABASE_URL", "mysql://x/y"),
        ("DATABASE_URL", "postgresql://h:notaport/db"),
        ("EDGE_PORT", "70000"),
        ("EDGE_PORT", "eighty"),
        ("BTS_PARTITIONS", "0"),
        ("PROVIDER_CLOCK_SPEED", "-1"),
        ("BTS_STORE", "sqlite"),
        ("BTS_TOPIC_PREFIX", "has space"),
        ("SINKS_FETCH_WAIT_MS", "-1"),
        ("SINKS_FETCH_WAIT_MS", "soon"),
    ],
)
def test_a_malformed_value_names_its_variable(name, value):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert info.value.name == name
    assert name in str(info.value)


def test_env_round_trips():
    s = Settings.from_env({"BTS_TOPIC_PREFIX": "p-", "BTS_PARTITIONS": "3", "PROVIDER_CLOCK_SPEED": "2.5",
                           "SINKS_FETCH_WAIT_MS": "250"})
    assert s.sinks_fetch_wait_ms == 250
    assert Settings.from_env(s.env()) == s
