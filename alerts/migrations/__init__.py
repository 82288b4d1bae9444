"""Schema migrations of the alerts database (Alembic), run by :func:`alerts.store.migrate`.

``env.py`` takes the connection from ``config.attributes["connection"]``; each file in
``versions/`` is one revision, numbered ``0001``, ``0002``, ... so an operator can read the
database's ``alembic_version`` against this folder.
"""
