"""Pure judgement: one series against its template (``check``), a project's expected
session (``protocol``) and each station's session against it (``compliance``).

May import the names of ``mrqart.headers``; never trio, the store or the live service.
"""
