"""The CAP 1.2 vocabulary every alert speaks: severity, urgency, certainty, category.

Rules choose these values, the store ranks severities and subscriptions filter on them,
so they live with the canonical alert message at the bottom of the layers.

Example:
    >>> SEVERITY_RANK["Severe"] > SEVERITY_RANK["Moderate"]
    True
"""

from __future__ import annotations

from typing import Literal

Severity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]
Urgency = Literal["Immediate", "Expected", "Future", "Past", "Unknown"]
Certainty = Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"]
Category = Literal["Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env",
                   "Transport", "Infra", "CBRNE", "Other"]
SEVERITY_RANK: dict[str, int] = {"Unknown": 0, "Minor": 1, "Moderate": 2, "Severe": 3,
                                 "Extreme": 4}
