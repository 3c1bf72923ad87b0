"""The workspace as files: YAML with line numbers, the schema, the frozen model, merge, block references,
loading, what an action gets, scaffolding."""
