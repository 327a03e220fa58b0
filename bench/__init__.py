"""``make bench``: an Entra-shaped load on a running scimbus stack, over HTTP.

``python -m bench --help`` for the options; ``bench.load`` holds the workload and the
report, ``bench.procs`` the per-role RSS/CPU of a stack's process tree.
"""
