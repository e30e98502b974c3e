"""How the embedded broker's fetch time grows with the record batches stored in a partition.

``python -m bench.brokerscan [BATCHES ...]`` starts the embedded broker and writes
one-record batches (each a produce request of its own) to one partition. At each
count it times a fetch of the last record of that partition, of another partition
of the same topic (one record) and of a partition holding as many records sent
together (a few large batches), and prints one row per count. This is a property
of the broker used here, not of the pipeline; it is why the pipeline figure
depends on how many produce batches the workers write.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline import embedded

RECORD = b"x" * 200
WAIT_MS = 5000


async def last_record_ms(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int,
                         rounds: int = 9) -> float | None:
    """Median time to fetch the record at ``end - 1``; None when a fetch brought nothing."""
    times = []
    for _ in range(rounds):
        consumer.seek(tp, end - 1)
        t0 = time.perf_counter()
        records = await consumer.getmany(tp, timeout_ms=WAIT_MS)
        times.append((time.perf_counter() - t0) * 1000)
        if not records.get(tp):
            return None
    return statistics.median(times)


async def run(counts: list[int]) -> list[tuple[int, float | None, float | None, float | None]]:
    with tempfile.TemporaryDirectory() as tmp:
        broker = embedded.start_broker(Path(tmp))
        bootstrap = broker.url.removeprefix("kafka://")
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=10)
        try:
            await admin.start()
            await admin.create_topics([NewTopic("one-per-batch", 2, 1), NewTopic("together", 1, 1)])
            await producer.start()
            await consumer.start()
            small, other, big = (TopicPartition("one-per-batch", 0),
                                 TopicPartition("one-per-batch", 1), TopicPartition("together", 0))
            consumer.assign([small, other, big])
            await producer.send_and_wait(other.topic, RECORD, partition=other.partition)
            written = together = 0
            rows = []
            for count in counts:
                while written < count:
                    await producer.send_and_wait(small.topic, RECORD, partition=small.partition)
                    written += 1
                while together < count:
                    await producer.send(big.topic, RECORD, partition=big.partition)
                    together += 1
                await producer.flush()
                rows.append((count, await last_record_ms(consumer, small, written),
                             await last_record_ms(consumer, other, 1),
                             await last_record_ms(consumer, big, count)))
            return rows
        finally:
            await consumer.stop()
            await producer.stop()
            await admin.close()
            broker.stop()


def main(argv: list[str]) -> None:
    counts = [int(a) for a in argv] or [100, 2000, 8000]
    rows = asyncio.run(run(counts))
    print("| batches in the partition | fetch of its last record | another partition | "
          "as many records in a few batches |")
    print("|---|---|---|---|")
    def ms(value: float | None) -> str:
        return f"{value:.1f} ms" if value is not None else f"nothing within {WAIT_MS / 1000:g} s"

    for count, small, other, big in rows:
        print(f"| {count:,} | {ms(small)} | {ms(other)} | {ms(big)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
