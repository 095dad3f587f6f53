"""Real peers for the delivery channels, on 127.0.0.1 with ports from the OS.

Each peer runs in its own thread (its own event loop), so a test can use it whatever runs
the test's own loop. Fixtures: ``tests.peers.fixtures`` (``pytest_plugins`` it)."""
