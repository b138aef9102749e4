"""The responder API (FastAPI): incidents, alerts, CAP, Atom feeds, live stream."""
