"""Serving: many live streams over WebSocket from one process and one model (``livecue serve``).

:func:`~livecue.serve.app.create_app` builds the FastAPI app; :mod:`~livecue.serve.protocol` is the message
schema (docs/protocol.md); :mod:`~livecue.serve.scheduler` steps every session fairly on one model worker;
``static/`` is the live web page. The Python client is :mod:`livecue.client`. Needs the ``[serve]`` extra.
"""
