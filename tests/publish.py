"""A separate publisher process for end-to-end tests.

    python tests/publish.py PORT FILE

FILE holds one message a line: ``topic<TAB>base64 payload``. Publishes every
message at QoS 1 (MQTT v5), exits once the broker has acknowledged all, and
prints the monotonic time of the first publish (for latency measurements).
"""

import base64
import sys
import time

import paho.mqtt.client as mqtt


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"test-pub-{port}-{path[-8:]}",
        protocol=mqtt.MQTTv5,
    )
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = []
    first_sent = None
    with open(path) as f:
        for line in f:
            topic, b64 = line.rstrip("\n").split("\t")
            if first_sent is None:
                first_sent = time.monotonic()  # CLOCK_MONOTONIC is shared by all processes
            infos.append(c.publish(topic, base64.b64decode(b64), qos=1))
    for info in infos:
        info.wait_for_publish(60)
    c.loop_stop()
    c.disconnect()
    print(f"published {len(infos)} first_sent={first_sent}")


if __name__ == "__main__":
    main()
