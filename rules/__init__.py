"""Rules: a declarative YAML rule language, its loader, alert identity and the vectorised
frame evaluator (stateless and stateful kinds, forecast kinds).

May use: ``citywatch.streams`` (envelopes, frames, alerts, as data), ``citywatch.geo``,
``citywatch.forecasts`` (forecast grids). Never Kafka clients, Faust, SQLAlchemy or
FastAPI: state is kept through the ``state.StateStore`` interface.
"""
