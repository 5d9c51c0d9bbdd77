"""Load tests (locust) against a running facegrid: personas, payloads, traffic shape, bounded runner."""
