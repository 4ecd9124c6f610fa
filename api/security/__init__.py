"""Security: API keys (storage, verification), the authentication middleware, scope guards.

Rate limits, CORS and the audit log come next and hang off the same seam: the middleware
leaves the verified :class:`protocol.auth.ApiKey` in ``request.user`` (its id in
``request.auth``) before any handler or body parsing runs.
"""
