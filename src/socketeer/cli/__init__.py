"""The ``socketeer`` command line (SPEC §5); ``main`` is the entry point."""
