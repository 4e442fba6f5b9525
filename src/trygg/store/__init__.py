"""store: the only module that speaks SQL.

Everything trygg keeps lives in PostgreSQL (TimescaleDB where available):
migrations, batched event and dead-letter writes, the registry, alerts and
their append-only lifecycle records. Functions take an open psycopg
connection, so the caller decides about pooling and transactions.
"""
