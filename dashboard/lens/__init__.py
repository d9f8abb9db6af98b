"""Small shared UI helpers for the ConceptLens dashboard (the library itself lives in ``core``)."""
