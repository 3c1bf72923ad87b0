"""One run: request and result types, the pipeline, the engine, the preflight, failure wording."""
