"""One module per fuzz target (names in :data:`tests.fuzz.TARGETS`)."""
