"""A separate publisher process for end-to-end tests.

    python tests/publish.py PORT FILE [RATE]

FILE holds one message a line: ``topic<TAB>base64 payload``. Publishes every
message at QoS 1 (MQTT v5), exits once the broker has acknowledged all, and
prints the monotonic time of the first publish (for latency measurements).
"""

import base64
import os
import sys
import time

import paho.mqtt.client as mqtt


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"test-pub-{port}-{path[-8:]}",
        protocol=mqtt.MQTTv5,
    )
    acked: set[int] = set()
    c.on_publish = lambda client, userdata, mid, rc, props: acked.add(mid)
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    # Survive a broker restart: paho reconnects and re-sends what was in flight.
    c.reconnect_delay_set(0.1, 1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = []
    first_sent = None
    with open(path) as f:
        os.unlink(path)  # the file is ours to remove: read on from the open file
        for line in f:
            topic, b64 = line.rstrip("\n").split("\t")
            if first_sent is None:
                first_sent = time.monotonic()  # CLOCK_MONOTONIC is shared by all processes
            elif rate:
                delay = first_sent + len(infos) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            infos.append(c.publish(topic, base64.b64decode(b64), qos=1))
    # Not wait_for_publish(): it raises for messages queued while disconnected,
    # which paho still delivers after reconnecting.
    deadline = time.monotonic() + 120
    pending = {info.mid for info in infos}
    while not pending <= acked:
        if time.monotonic() > deadline:
            sys.exit(f"{len(pending - acked)} messages not acknowledged by the broker")
        time.sleep(0.02)
    c.loop_stop()
    c.disconnect()
    print(f"published {len(infos)} first_sent={first_sent}")


if __name__ == "__main__":
    main()
