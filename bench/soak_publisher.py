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

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

SITE, DEVICES = "bench", 500


def main() -> None:
    port, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-soak", protocol=mqtt.MQTTv5)
    acked = 0

    def on_publish(*args: object) -> None:
        nonlocal acked
        acked += 1

    c.on_publish = on_publish
    c.max_inflight_messages_set(2000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    start = time.monotonic()
    i = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        while i < due:
            if i - acked > 50_000:  # paho's message ids wrap at 65,535
                break
            body = {
                "id": f"soak-{i:010d}",
                "type": "motion.detected",
                "time": datetime.now(UTC).isoformat(),
                "room": "livingroom",
                "value": None,
                "seq": i,
                "fw": "2.4.1-rc7",
                "gw": "zigbee-gateway-01.home",
            }
            topic = f"trygg/{SITE}/devices/motion-{i % DEVICES:04d}/events"
            c.publish(topic, orjson.dumps(body), qos=1)
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
