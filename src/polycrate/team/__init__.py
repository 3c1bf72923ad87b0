"""Team mode's queue and workers, on procrastinate (a PostgreSQL task queue).

``launch`` (the launching side: a workflow run enqueued with the workspace's git commit, one launched run per
workflow, `runs stop`), ``worker`` (`polycrate worker`: takes jobs of its queues, starts each run as a process of
its own, marks the runs of dead workers lost), ``execute`` (that process: holds the run's fence, runs the
workflow through run/'s pipeline, stops itself when its fence or its worker is gone or someone stops it).

Nothing here is imported without a backend setting: procrastinate and psycopg load with these modules.
"""
