"""The authorization funnel: where companies drop out of the journey.

`codat_authflow.funnel.compute` is pure (journeys in, numbers out);
`codat_authflow.storage.funnel` keeps the index of companies by first-seen
time and loads a period's journeys; `GET /api/funnel` and the `/ops/funnel` page show the result.
"""

from codat_authflow.funnel.compute import (
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
