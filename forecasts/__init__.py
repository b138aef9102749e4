"""Forecasting: series from history files, Prophet and seasonal-naive models, rolling-origin
backtests and model selection (`citywatch forecasts evaluate`)."""
