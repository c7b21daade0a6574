"""codat-authflow's shipped adapters and services, around the pure domain
(`state_machine`) and its entrypoints (`app`, `workers`): settings, logging,
the Redis storage, the authorization journey with its Codat client,
delivery to subscribers, codat_authflow.observability and the funnel."""
