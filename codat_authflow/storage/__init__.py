"""Redis adapters: the webhook inbox and the company repository.

Key layout (all under `KEY_PREFIX`, default `authflow`):

| key | type | what |
| --- | --- | --- |
| `{p}:seen:{webhook-id}` | string, TTL 72 h | webhook ids already accepted (deduplication) |
| `{p}:inbox` | stream, group `workers` | verified webhooks waiting to be applied |
| `{p}:inbox:drain-scheduled` | string, TTL | a drain job is queued; no need for another |
| `{p}:inbox:dead` | capped stream | entries that could not be applied (poison) |
| `{p}:events:ignored` | capped stream | verified events of types we do not act on |
| `{p}:company:{id}` | string (zlib JSON) | facts, state, bounded history and event log |
| `{p}:stats:states` | hash | number of companies in each state |
| `{p}:stats:ignored` | hash | ignored events by type |
"""
