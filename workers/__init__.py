"""RQ side: the jobs that drain the webhook inbox into company state."""
