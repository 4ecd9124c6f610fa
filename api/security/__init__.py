"""Security: API keys (storage, verification), the authentication middleware, scope guards,
per-key limits, CORS, the audit log, and the watch that cuts open connections of a key that
was revoked or expired.

The middleware leaves the verified :class:`protocol.auth.ApiKey` in ``request.user`` (its
:class:`api.security.keys.Credential` in ``request.auth``) before any handler or body
parsing runs.
"""
