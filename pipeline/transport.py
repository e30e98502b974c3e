"""The Kafka transport of our Faust app, with the fetch wait as a setting.

Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500`` for worker
consumers. Brokers that hold a fetch for part of that wait even when data is
ready (the embedded one holds about half of it) then add that much latency to
every hop of the pipeline. This module changes nothing else in the driver.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_wait_ms", 1500)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """A Faust app whose worker consumers use ``fetch_wait_ms``."""

    fetch_wait_ms: int = 1500

    def add_service(self, service: Any) -> None:
        """Start and stop an already built ``mode.Service`` with the app."""
        self._extra_services.append(service)

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)
