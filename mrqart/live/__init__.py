"""The running service: per-station session state (``session``), the broadcaster to
browsers (``hub``), the HTTP/WebSocket routes (``web``) and the pipeline with its root
nursery (``service``).

May import every package below it in the flow: ``ingest``, ``headers``, ``rules``, ``store``.
"""
