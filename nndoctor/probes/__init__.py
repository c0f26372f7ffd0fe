"""Everything that observes a model: hooks and modes live here and only here."""
