"""Forecasting: series from history files or from the events topic's frames, Prophet and
seasonal-naive models, rolling-origin backtests, model selection, training and forecast
grids (``citywatch forecasts evaluate``/``train``).

May use: ``citywatch.streams`` (frames and envelopes, as data); pandas, Prophet. Never
Kafka clients, Faust, SQLAlchemy or FastAPI: the model registry lives in
``citywatch.ops.store``, and reading Kafka is handed in as a function.
"""
