from tests.scaip_model.scaip import (
    Mrq,
    Mrs,
)

__all__ = [
    "Mrq",
    "Mrs",
]
