"""Tokens: the only module that uses PyJWT. A token becomes a Principal, or an invalid_token
error."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from . import errors, validation
from .config import Settings
from .models import ROLES, Principal

LEEWAY_SECONDS = 10
VERIFIED_KEPT = 4096  # tokens whose check is remembered until they expire


class TokenVerifier:
    """Checks signature, algorithm, `exp`, `aud`/`iss` (when configured) and the claims we need.

    The key is chosen by the algorithm family, never taken from the token: an HS256 token is
    only checked against the secret and an RS256/ES256 token only against the public key, which
    rules out `alg: none` and the HS256-signed-with-the-public-key confusion.

    A token that passed is remembered, by its whole text (signature included), until its
    `exp` (with the leeway) passes: a service sending with one token has it parsed and its
    signature checked once, not on every request. Each later use still checks `exp`; a token
    that failed is never remembered. At most VERIFIED_KEPT are kept, the oldest going first.
    """

    def __init__(self, settings: Settings) -> None:
        self._keys: dict[str, Any] = {}
        if settings.jwt_secret:
            self._keys["HS256"] = str(settings.jwt_secret)
        if settings.jwt_public_key:
            pem = Path(settings.jwt_public_key).read_bytes()
            key = load_pem_public_key(pem)
            if isinstance(key, rsa.RSAPublicKey):
                self._keys["RS256"] = key
            elif isinstance(key, ec.EllipticCurvePublicKey):
                self._keys["ES256"] = key
            else:
                raise ValueError("--jwt-public-key: only RSA and EC (P-256) keys are supported")
        if not self._keys:
            raise ValueError("no --jwt-secret or --jwt-public-key: nothing to check tokens with")
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._verified: dict[str, tuple[Principal, float]] = {}  # token: (who, good until)

    def verify(self, token: str | None) -> Principal:
        if not token:
            raise errors.invalid_token("a token is required (Authorization: Bearer or ?token=)")
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            del self._verified[token]  # expired since: checked again, and refused, below
        principal, claims = self._check(token)
        try:  # PyJWT takes a token as expired once exp <= now - leeway
            until = float(claims["exp"]) + LEEWAY_SECONDS
        except (TypeError, ValueError, OverflowError):
            return principal
        if len(self._verified) >= VERIFIED_KEPT:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, until)
        return principal

    def _check(self, token: str) -> tuple[Principal, dict[str, Any]]:
        alg: Any
        if len(self._keys) == 1:
            # One key: PyJWT refuses any other algorithm itself, so the header is parsed once.
            [(alg, key)] = self._keys.items()
        else:
            try:
                alg = jwt.get_unverified_header(token).get("alg")
            except jwt.PyJWTError:
                raise errors.invalid_token("the token is malformed") from None
            key = self._keys.get(alg) if isinstance(alg, str) else None
            if key is None:
                raise errors.invalid_token(f"algorithm {alg!r} is not accepted")
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self._audience, issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise errors.invalid_token("the token has expired") from None
        except jwt.InvalidSignatureError:
            raise errors.invalid_token("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as e:
            raise errors.invalid_token(f"the token has no {e.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise errors.invalid_token("the token's audience is not accepted") from None
        except jwt.InvalidIssuerError:
            raise errors.invalid_token("the token's issuer is not accepted") from None
        except jwt.InvalidAlgorithmError:
            raise errors.invalid_token(f"only {alg} tokens are accepted") from None
        except jwt.DecodeError:
            raise errors.invalid_token("the token is malformed") from None
        except jwt.PyJWTError:
            raise errors.invalid_token("the token is not valid") from None
        return _principal(claims), claims


def _principal(claims: dict[str, Any]) -> Principal:
    if isinstance(claims.get("exp"), str | bool):  # PyJWT takes "9999999999"; RFC 7519 not
        raise errors.invalid_token("the token's 'exp' claim must be a number")
    tenant_id, user_id = claims.get("tenant_id"), claims.get("sub")
    role = claims.get("role", "user")
    if not isinstance(tenant_id, str) or not tenant_id:
        raise errors.invalid_token("the token has no 'tenant_id' claim")
    if not isinstance(user_id, str) or not user_id:
        raise errors.invalid_token("the token's 'sub' claim must be a non-empty string")
    if role not in ROLES:
        raise errors.invalid_token(f"the token's role must be one of {', '.join(ROLES)}")
    validation.claim(tenant_id, "tenant_id")
    validation.claim(user_id, "sub")
    return Principal(tenant_id=tenant_id, user_id=user_id, role=role)


def mint(secret: str, tenant_id: str, user_id: str, role: str = "user", ttl: float = 3600,
         audience: str | None = None, issuer: str | None = None) -> str:
    """An HS256 token, for trying tidings out and for tests."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "tenant_id": tenant_id, "role": role,
                              "iat": now, "exp": now + int(ttl)}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")
