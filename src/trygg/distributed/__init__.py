"""The distributed runner: stateless MQTT -> Kafka bridges and Faust workers.

See docs/distributed.md. Needs the optional extra ``trygg[distributed]``
(faust-streaming); the embedded runner never imports this package.
"""
