"""Talking to downstream subscribers: URL safety (SSRF guard) and signed delivery."""
