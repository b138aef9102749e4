"""Forecasting: Prophet and seasonal-naive models for early-warning rules (in progress)."""
