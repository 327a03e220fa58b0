"""``make bench``: an Entra-shaped load on scimbus and on the peer scim2-server, over HTTP.

``python -m bench --help`` for the options; ``bench.load`` holds the workload and the
driver, ``bench.peer`` the peer's virtualenv, process and request dialect,
``bench.report`` the printed tables and the targets of issue 7, ``bench.procs`` the
per-role RSS/PSS/CPU of a process tree.
"""
