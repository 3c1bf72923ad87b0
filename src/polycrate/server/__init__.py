"""`polycrate serve`: the team's web view and JSON API over the workspaces' run stores.

Loaded only by `polycrate serve` and `polycrate server ...`. The modules split by weight:
``state`` (users, tokens, sessions, audit) and ``catalog`` (reading workspaces and their run
stores) and ``launch`` (child `polycrate` processes) use the standard library and polycrate's
core only, so `polycrate server token add` stays light; ``app`` is the Starlette application and
the only module that imports starlette, jinja2 or uvicorn.
"""
