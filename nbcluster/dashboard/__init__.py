"""The dashboard: one single-page app over one JSON + WebSocket API, served twice.

The head serves it on its own port behind the cluster token (``head_server``) and the
jupyter-server extension (``nbcluster.extension``) serves it under Jupyter's base URL and
login for every cluster of that server's user. Both share the API's meaning (``api``), the
connection to a head (``client``), the live event relay (``event_relay``) and the handlers'
bodies (``handlers``); the page itself is built from ``js/dashboard`` into ``static/``.
"""
