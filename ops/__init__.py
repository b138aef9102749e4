"""Operations: the top layer and the one composition root.

Holds: settings (``Settings`` extends the stream layer's), the incident store (SQLAlchemy
+ Alembic, rule-set history, forecast model registry, subscriptions, tokens), the
responder API, CAP export, the CLI (one module per command group), the demo, and
``ops.worker``, which wires the stream worker to the rule engine, the models and the store.

May use: every other citywatch package. Nothing imports ``citywatch.ops``.
"""
