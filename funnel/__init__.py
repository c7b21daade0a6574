"""The authorization funnel: where companies drop out of the journey.

`funnel.compute` is pure (journeys in, numbers out); `storage.funnel` keeps
the index of companies by first-seen time and loads a period's journeys;
`GET /api/funnel` and the `/ops/funnel` page show the result.
"""

from funnel.compute import (
    STEPS,
    CompanyJourney,
    Funnel,
    Progress,
    compute_funnel,
    percentile,
    progress,
)

__all__ = [
    "STEPS",
    "CompanyJourney",
    "Funnel",
    "Progress",
    "compute_funnel",
    "percentile",
    "progress",
]
