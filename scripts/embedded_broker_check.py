"""A standard Kafka client outside the process talks to `millrace run`'s embedded broker.

Produces one malformed line to the job's topic with Python's confluent-kafka (after
examples/python/produce.py has produced the good ones), then reads it back from the dead-letter
topic.
Then aiokafka produces a record to a topic of its own and reads it back, and kafka-python 3.0
is shown not to bootstrap (librdkafka's mock cluster answers its ApiVersions v4 request with
error 35 in a body kafka-python cannot decode): if it ever does, this check fails, so that the
README's note is taken out.
Usage: embedded_broker_check.py BOOTSTRAP TOPIC DEAD_LETTER_TOPIC
"""
import asyncio
import sys
import time

from confluent_kafka import Consumer, Producer

bootstrap, topic, dead_letters = sys.argv[1:4]
producer = Producer({"bootstrap.servers": bootstrap})
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
        break
else:
    consumer.close()
    sys.exit("embedded broker: the dead letter never arrived")
consumer.close()


async def aiokafka_round_trip():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("aiokafka-check", b"from aiokafka")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer("aiokafka-check", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), 30)
        assert message.value == b"from aiokafka", message
    finally:
        await consumer.stop()


asyncio.run(aiokafka_round_trip())
print("embedded broker: aiokafka produced and read a record back")

from kafka import KafkaProducer  # noqa: E402
from kafka.errors import KafkaError  # noqa: E402

try:
    KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000, max_block_ms=3000).close()
except KafkaError as error:
    print(f"embedded broker: kafka-python 3.0 cannot bootstrap, as the README says ({type(error).__name__})")
else:
    sys.exit("embedded broker: kafka-python bootstrapped: take the README's note out")
