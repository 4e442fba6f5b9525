"""The soak's publisher, a process of its own: paced QoS 1 single-event messages.

    python bench/soak_publisher.py PORT RATE SECONDS

Publishes RATE messages/s (about 200 bytes, the bench's devices, unique ids)
for SECONDS, waits for the broker to acknowledge them all, and prints
``published=N acked=M``. In a process of its own because a publisher in the
bench's own process, beside its sampling, fell behind the rate it was asked for.
"""

import sys
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

SITE, DEVICES = "bench", 500
INFLIGHT = 200
# The bench's ~200-byte event; bytes formatting, as a publisher of its own must keep up.
BODY = (
    b'{"id":"soak-%010d","type":"motion.detected","time":"%s","room":"livingroom",'
    b'"value":null,"seq":%d,"fw":"2.4.1-rc7","gw":"zigbee-gateway-01.home"}'
)


def main() -> None:
    port, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-soak", protocol=mqtt.MQTTv5)
    acked = 0

    def on_publish(*args: object) -> None:
        nonlocal acked
        acked += 1

    c.on_publish = on_publish
    c.max_inflight_messages_set(INFLIGHT)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    start = time.monotonic()
    topics = [f"trygg/{SITE}/devices/motion-{d:04d}/events" for d in range(DEVICES)]
    i = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        stamp = datetime.now(UTC).isoformat().encode()  # one clock reading per tick
        # Never more outstanding than the in-flight window, and a small window: with
        # 2,000 in flight this publisher fell from 10,000/s to ~5,000/s after about
        # 300,000 messages, its own CPU doubling (paho's bookkeeping, not traced further);
        # with 200 it held 10,000/s.
        while i < due and i - acked < INFLIGHT:
            c.publish(topics[i % DEVICES], BODY % (i, stamp, i), qos=1)
            i += 1
        time.sleep(0.005)
    deadline = time.monotonic() + 120
    while acked < i and time.monotonic() < deadline:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    print(f"published={i} acked={acked}", flush=True)


if __name__ == "__main__":
    main()
