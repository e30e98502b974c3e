"""``bts-guru dev`` creates the data topics itself, with ``BTS_PARTITIONS`` partitions.

Left to the broker's auto-creation (its default is 4 partitions on the embedded one), the
topics of a development run had 4 partitions while the workers placed poll targets on 8:
a target whose key fell on partitions 4-7 was never polled.
"""

from __future__ import annotations

import dataclasses

from aiokafka import AIOKafkaConsumer

from pipeline.dev import create_topics
from tables import topics


async def test_dev_creates_every_data_topic_with_the_configured_partitions(settings):
    s = dataclasses.replace(settings, partitions=6)
    await create_topics(s)
    await create_topics(s)  # again: the topics exist, nothing changes
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata
        for name in (topics.RAW_FETCHES, topics.MATCH_UPDATES, topics.MATCH_DELTAS,
                     topics.MATCH_SNAPSHOTS, topics.DEAD_LETTERS):
            assert consumer.partitions_for_topic(s.topic(name)) == set(range(6)), name
    finally:
        await consumer.stop()
