"""Serving: many live streams over WebSocket from one process and one model (``livecue serve``).

:func:`~livecue.serve.app.create_app` builds the FastAPI app; :mod:`~livecue.serve.protocol` is the message
schema and the limits (docs/protocol.md); :mod:`~livecue.serve.scheduler` steps every session fairly on one model
worker (:mod:`~livecue.serve.session` is one client's bounded state); :mod:`~livecue.serve.images` decodes frames in a
bounded pool after :mod:`~livecue.serve.imagesize` has checked their declared size; :mod:`~livecue.serve.security`
is the token, Origin and Host checks and log redaction; :mod:`~livecue.serve.net` guards the HTTP connections
(request-head timeout, socket cap); ``static/`` is the live web page. The Python client is :mod:`livecue.client`.
Needs the ``[serve]`` extra. ``cluster*`` modules: the same app on Ray Serve replicas (``livecue serve --replicas N``;
the ``[cluster]`` extra, docs/cluster.md).
"""
