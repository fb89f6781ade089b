"""ingest: validates photo events, stores originals in the user's region, emits IngestedPhoto."""
