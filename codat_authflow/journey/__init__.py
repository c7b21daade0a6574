"""The authorization journey over Codat's Platform API.

create the company (`companies`), show the platforms and their branding
(`integrations`), create a connection and send the user to its `linkUrl`,
manage connections (`connections`), interpret the redirect back
(`link_callback`) and heal companies whose webhooks never came
(`reconcile`). Each step feeds what Codat answered to the state machine
through `CompanyUpdates.apply`, as synthetic events (`events`).

`Journey` (in `codat_authflow.journey.service`) bundles what the steps need; the web app,
the RQ worker and the CLI each build one.
"""
