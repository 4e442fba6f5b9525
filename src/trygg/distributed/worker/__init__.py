"""The Faust worker (``trygg worker``): see trygg.distributed.worker.app."""
