"""Developer and test tooling: private Redis servers and the local stack runner.

Nothing in here is imported by the application itself (app/, workers/, ...);
it exists for `scripts/run-stack`, the test suite and benchmarks.
"""
