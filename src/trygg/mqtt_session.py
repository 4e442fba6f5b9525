"""What trygg watches on its own MQTT sessions: takeovers and lost sessions.

An MQTT session belongs to a client id, not to a user. When another client
connects with the same id, the broker hands it the session (subscriptions,
queued messages) and drops the old connection, from mosquitto 2.0.15 on with
DISCONNECT reason code 142 "Session taken over" (2.0.11 just closes the
socket). Messages meanwhile go to the newcomer, whose ACL lets it read none
of them: for trygg's ingest session that is alarms lost without a trace. The
broker configuration stops devices doing it (``use_username_as_clientid`` on
their listener, docs/ingest.md); this module is the alarm for whatever still
does (a second trygg with the same ``TRYGG_MQTT_CLIENT_ID``, a broker set up
without that protection).

A takeover by a client that started clean also deletes the session, and a
reconnect then finds no session on the broker (``session_present`` off).
That is the one sign mosquitto 2.0.11 gives, and it also shows a session
that expired or a broker that lost its state: in each case messages published
while trygg was away may never reach it, so it is an error too.

Used by the ingest client (receiver process, distributed bridge) and the MQTT
alert channel, from paho's callbacks; the counts are plain ints read by
whoever reports them.
"""

from __future__ import annotations

import time
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

SESSION_TAKEN_OVER = 142  # MQTT v5 DISCONNECT reason code "Session taken over"


def is_takeover(reason: ReasonCode | None) -> bool:
    """Did the broker drop this connection because another client took the session?"""
    return (
        reason is not None
        and reason.packetType == PacketTypes.DISCONNECT
        and reason.value == SESSION_TAKEN_OVER
    )


class SessionWatch:
    """Counts one client's session takeovers and lost sessions, and logs each as an error.

    ``persistent``: the client keeps a session across connections (clean start
    off), so a reconnect without one means the session was lost.
    """

    def __init__(self, client_id: str, log: Any, persistent: bool = True) -> None:
        self.client_id = client_id
        self.persistent = persistent
        self.takeovers = 0
        self.last_takeover: float | None = None  # time.time() of the latest
        self.sessions_lost = 0
        self._log = log
        self._had_session = False

    def connected(self, session_present: bool) -> None:
        """On every accepted CONNACK."""
        if self.persistent and self._had_session and not session_present:
            self.sessions_lost += 1
            self._log.error(
                "mqtt session lost",
                client_id=self.client_id,
                sessions_lost=self.sessions_lost,
                why="the broker had no session for this client id on reconnect (taken over "
                "by a client that started clean, expired, or the broker lost its state); "
                "messages published meanwhile may never arrive",
            )
        self._had_session = True

    def disconnected(self, reason: ReasonCode | None) -> bool:
        """On every disconnect; True (and logged as an error) if it was a takeover."""
        if not is_takeover(reason):
            return False
        self.takeovers += 1
        self.last_takeover = time.time()
        self._log.error(
            "mqtt session taken over",
            client_id=self.client_id,
            takeovers=self.takeovers,
            why="another client connected with this client id and the broker gave it "
            "this session; check the broker's client-id protection (docs/ingest.md) "
            "and that no other trygg process uses the same client id",
        )
        return True
