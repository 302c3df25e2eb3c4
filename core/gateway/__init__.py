"""The request pipeline for chat and embeddings: schemas, completions, the usage
ledger, cache, streams."""
