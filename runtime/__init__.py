"""What every process (web, worker, clock) needs at start: settings from the
environment, logging, a Redis connection."""
