"""Produce events to a millrace job's Kafka topic with confluent-kafka.

Each line of FILE (Criteo TSV, CSV, JSON lines: whatever the job's [schema] reads) becomes one
record; the broker stamps its time, which is the event time unless the schema names a time field.

Usage: python produce.py BOOTSTRAP TOPIC FILE [--limit N]
       python produce.py 127.0.0.1:9092 criteo ../shared/data/criteo-kaggle-dac-head8000/train.tsv
"""
import argparse
import sys

from confluent_kafka import Producer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("bootstrap", help="the brokers, host:port[,host:port]")
parser.add_argument("topic")
parser.add_argument("file")
parser.add_argument("--limit", type=int, default=None, help="produce at most this many lines")
args = parser.parse_args()

producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20})
sent = 0
with open(args.file, "rb") as lines:
    for line in lines:
        if args.limit is not None and sent >= args.limit:
            break
        line = line.rstrip(b"\r\n")
        while True:
            try:
                producer.produce(args.topic, line)
                break
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain
        producer.poll(0)
        sent += 1
if producer.flush(60) != 0:
    sys.exit("some records were not acknowledged")
print(f"produced {sent} records to {args.topic}")
