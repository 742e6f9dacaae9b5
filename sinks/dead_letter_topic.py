"""Publish dead letters to a Kafka topic, for consumers that alert on or repair bad input.

Each message is the dead_letters row as JSON (payload, reason, source position), keyed by
`partition:offset:record_id`, the row's key in ClickHouse. Delivery is at-least-once: a replay
after a failure can publish a dead letter again, and the key lets consumers drop the repeat
(the broker here does not filter aborted transactions, so Kafka transactions would not help).
record_id (a hash of the record timestamp and payload, udfs.validation.record_id) keeps two
different records apart that a restarted broker gave the same position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from sinks.retry import retry_with_backoff


def dead_letter_key(row: dict) -> str:
    """`partition:offset:record_id` of a dead_letters row."""
    return f"{row['source_partition']}:{row['source_offset']}:{row.get('record_id', '')}"


@dataclass
class DeadLetterPublisher:
    """A Kafka producer for the dead-letter topic, created on the worker in open()."""

    bootstrap_servers: str
    topic: str
    attempts: int = 8
    max_backoff_seconds: int = 30

    def open(self) -> None:
        from kafka import KafkaProducer

        self.producer = KafkaProducer(
            bootstrap_servers=self.bootstrap_servers.split(","),
            acks="all",
            linger_ms=5,
            retries=5,
            client_id="tidemark-dead-letters",
        )

    def publish(self, lines: Sequence[str]) -> None:
        """Send every line and wait until the broker has acknowledged all of them."""

        def send_all() -> None:
            futures = []
            for line in lines:
                row = orjson.loads(line)
                key = dead_letter_key(row).encode()
                futures.append(self.producer.send(self.topic, key=key, value=line.encode()))
            self.producer.flush()
            for future in futures:
                future.get(timeout=30)

        retry_with_backoff(
            send_all,
            f"publish of {len(lines)} dead letters to {self.topic}",
            self.attempts,
            self.max_backoff_seconds,
        )

    def close(self) -> None:
        producer = getattr(self, "producer", None)
        if producer is not None:
            producer.close(timeout=10)
