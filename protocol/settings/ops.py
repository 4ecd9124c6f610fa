"""Operations: ``FlowerSettings`` (``UML_FLOWER_*``) and ``LogSettings`` (``UML_LOG_*``)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct


class FlowerSettings(Struct, frozen=True, kw_only=True):
    """``uml flower``, read from ``UML_FLOWER_<FIELD>``. The password is a secret: it is never
    logged or printed, and reaches Flower through its environment, not its command line."""

    user: Annotated[str, Meta(description="Flower basic-auth user, with UML_FLOWER_PASSWORD.")] = ""
    password: Annotated[str, Meta(description="Flower basic-auth password (a secret).")] = ""
    basic_auth: Annotated[
        str,
        Meta(
            description="Flower basic auth as `user:password[,user:password...]`, instead of "
            "UML_FLOWER_USER and UML_FLOWER_PASSWORD (a secret)."
        ),
    ] = ""
    address: Annotated[str, Meta(description="Address Flower listens on.")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535, description="Port Flower listens on.")] = 5555

    def credentials(self) -> str:
        """The ``user:password`` list Flower checks; ValueError when none is set."""
        if self.basic_auth:
            pairs = [p.strip() for p in self.basic_auth.split(",") if p.strip()]
            if not pairs or any(":" not in p or p.startswith(":") for p in pairs):
                raise ValueError("UML_FLOWER_BASIC_AUTH must look like user:password[,...]")
            return ",".join(pairs)
        if self.user and self.password:
            return f"{self.user}:{self.password}"
        raise ValueError(
            "Flower needs basic auth: set UML_FLOWER_USER and UML_FLOWER_PASSWORD, "
            "or UML_FLOWER_BASIC_AUTH=user:password"
        )

    def __repr__(self) -> str:
        """Never show the password, even when a whole settings object gets logged."""
        return f"FlowerSettings(user={self.user!r}, address={self.address!r}, port={self.port})"


class LogSettings(Struct, frozen=True, kw_only=True):
    """Process logs, read from ``UML_LOG_<FIELD>`` (docs/operations.md, "Logs")."""

    format: Annotated[
        Literal["auto", "json", "text"],
        Meta(
            description="json (one object per line, with request and job ids), text, or auto: "
            "text on a terminal and under `uml dev`, json otherwise."
        ),
    ] = "auto"
    level: Annotated[str, Meta(description="Root log level (DEBUG, INFO, WARNING, ...).")] = "INFO"
