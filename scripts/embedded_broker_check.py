"""A standard Kafka client outside the process talks to `millrace run`'s embedded broker.

Produces the first N Criteo lines plus one malformed line to the job's topic with Python's
confluent-kafka, then reads the malformed line back from the dead-letter topic.
Usage: embedded_broker_check.py BOOTSTRAP TOPIC DEAD_LETTER_TOPIC CRITEO_FILE N
"""
import sys
import time

from confluent_kafka import Consumer, Producer

bootstrap, topic, dead_letters, path, n = sys.argv[1:6]
producer = Producer({"bootstrap.servers": bootstrap})
with open(path, "rb") as f:
    for line in f.read().splitlines()[: int(n)]:
        producer.produce(topic, line)
producer.produce(topic, b"not a criteo line, from python")
if producer.flush(30) != 0:
    sys.exit("embedded broker: records not acknowledged")

consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "python-check", "auto.offset.reset": "earliest"})
consumer.subscribe([dead_letters])
deadline = time.time() + 30
while time.time() < deadline:
    message = consumer.poll(0.5)
    if message is None or message.error() is not None:
        continue
    headers = dict(message.headers() or [])
    if message.value() == b"not a criteo line, from python" and headers.get("error_type") == b"label":
        print("embedded broker: python client produced and read its dead letter back")
        consumer.close()
        sys.exit(0)
consumer.close()
sys.exit("embedded broker: the dead letter never arrived")
