"""Persistence behind one interface: series history, file counts, templates, protocol
pins and acknowledgements. ``sqlite`` is the embedded default.

May import the names of ``mrqart.rules``; never trio or the live service. Blocking:
callers in trio run it through ``trio.to_thread.run_sync``.
"""

from mrqart.store.sqlite import SCHEMA_VERSION, NewerSchemaError, Store, param_set_of

__all__ = ["SCHEMA_VERSION", "NewerSchemaError", "Store", "param_set_of"]
