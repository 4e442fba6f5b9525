"""The baseline: a bare paho-mqtt subscriber that does nothing but acknowledge.

    python bench/bare_subscriber.py PORT CLIENT_ID N

Connects with a persistent session (QoS 1, clean start off), prints
``connected=<epoch>`` and, once N messages have arrived, ``done=<epoch>``.
With N = 0 it only creates the session and leaves.
"""

import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main() -> None:
    port, client_id, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    count = 0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client, userdata, msg):  # type: ignore[no-untyped-def]
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.max_inflight_messages_set(1000)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    # The clock starts at CONNECT: with a session present, the broker sends the
    # queue right after CONNACK, before our SUBACK arrives.
    started = time.time()
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.subscribe("trygg/+/devices/+/events", qos=1)
    c.loop_start()
    subscribed.wait(10)
    print(f"connected={started}", flush=True)
    if n:
        done.wait(600)
        print(f"done={time.time()} count={count}", flush=True)
    c.loop_stop()
    c.disconnect()


if __name__ == "__main__":
    main()
