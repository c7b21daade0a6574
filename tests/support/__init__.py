"""What tests, the soak, the benchmarks and the demo share: lifecycles of
Codat events, signing, a verifying subscriber, process helpers."""
