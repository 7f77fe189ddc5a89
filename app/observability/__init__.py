"""Operations: Prometheus metrics at /metrics, request ids, and JSON log lines; nothing is sent anywhere.

`context` holds the request id (and tenant) of the work in hand, `logs` formats log lines, `jobs` carries
the id from the API into the worker, `metrics` and `state` build each app's registry, `http` installs
the middleware and the route.
"""
