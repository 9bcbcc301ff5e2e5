"""The HTTP API (and, later, the web pages): an ASGI application over one open archive.

``app.create_app`` is the composition root; ``gate`` is how every route declares the
action it performs and asks :mod:`archiver.people.access` whether it may; ``api/`` holds
the routes, one module per part of the archive they expose.
"""
