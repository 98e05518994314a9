"""AWS Signature Version 4 as S3 checks it: pure functions, no I/O, the clock passed in.

A request proves it was made by the holder of a secret by carrying an HMAC of its canonical
form. The server rebuilds that form from what it received and compares:

    canonical request   PUT\\n/bucket/key\\nuploads=\\nhost:h\\nx-amz-date:...\\n\\nhost;x-amz-date\\n<payload hash>
    string to sign      AWS4-HMAC-SHA256\\n20130524T000000Z\\n20130524/us-east-1/s3/aws4_request\\nhex(sha256(canonical))
    signing key         HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), "s3"), "aws4_request")
    signature           hex(HMAC(signing key, string to sign))

Two carriers: the Authorization header (`parse_header_auth`) and a presigned URL's query
(`parse_query_auth`, with X-Amz-Expires). The payload hash is a hex SHA-256 the server checks
after reading the body, UNSIGNED-PAYLOAD, or one of the STREAMING-* forms whose chunks carry
their own signatures, chained from the request's (`chunk_signature`, `trailer_signature`; the
decoder is `mist.s3.chunked`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from calendar import timegm
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote, unquote_to_bytes

from mist.errors import InvalidRequest, UserError

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
MAX_SKEW_S = 15 * 60  # a header-signed request's clock may be this far off the server's
MAX_EXPIRES_S = 7 * 24 * 3600  # the longest a presigned URL may live

_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")

Headers = list[tuple[str, str]]  # (lower-case name, value), in arrival order
Query = list[tuple[str, str]]  # decoded (name, value), in arrival order


def denied(code: str, message: str) -> UserError:
    """An authentication failure; the S3 edge answers these with 403."""
    return UserError(message, code=code)


@dataclass(frozen=True)
class Credential:
    access_key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class Claim:
    """What a request says about its own signature (nothing checked yet)."""

    credential: Credential
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str  # YYYYMMDDTHHMMSSZ
    payload: str  # a hex SHA-256, UNSIGNED-PAYLOAD or a STREAMING-* form
    expires_s: int | None = None  # presigned URLs only


def parse_query(raw: bytes | str) -> Query:
    """The query string's pairs, percent-decoded ('+' stays '+', as S3 reads it)."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    pairs: Query = []
    for part in text.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def _first(headers: Headers, name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def parse_header_auth(headers: Headers) -> Claim | None:
    """The claim of an Authorization header, or None if there is none (an anonymous request)."""
    auth = _first(headers, "authorization")
    if auth is None:
        return None
    if not auth.startswith(ALGORITHM + " "):
        raise InvalidRequest(
            "the authorization mechanism you have provided is not supported; sign requests with "
            "AWS Signature Version 4 (AWS4-HMAC-SHA256), as boto3 and the aws CLI do by default",
            code="InvalidRequest",
        )
    fields: dict[str, str] = {}
    for part in auth[len(ALGORITHM) + 1 :].split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name] = value
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if f not in fields]
    if missing:
        raise InvalidRequest(
            f"the Authorization header lacks {', '.join(missing)}", code="AuthorizationHeaderMalformed"
        )
    amz_date = _first(headers, "x-amz-date") or _http_date_to_amz(_first(headers, "date"))
    payload = _first(headers, "x-amz-content-sha256")
    if payload is None:
        raise InvalidRequest(
            "missing required header for this request: x-amz-content-sha256", code="InvalidRequest"
        )
    return Claim(
        credential=_credential(fields["Credential"], "AuthorizationHeaderMalformed"),
        signed_headers=tuple(fields["SignedHeaders"].split(";")),
        signature=fields["Signature"],
        amz_date=amz_date,
        payload=payload.strip(),
    )


def parse_query_auth(query: Query) -> Claim | None:
    """The claim of a presigned URL (X-Amz-* query parameters), or None if it is not one."""
    params = dict(query)
    if "X-Amz-Signature" not in params and "X-Amz-Algorithm" not in params:
        return None
    code = "AuthorizationQueryParametersError"
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise InvalidRequest(f"X-Amz-Algorithm must be {ALGORITHM}", code=code)
    missing = [
        p for p in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Expires")
        if p not in params
    ]
    if missing:
        raise InvalidRequest(f"the presigned URL lacks {', '.join(missing)}", code=code)
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        raise InvalidRequest("X-Amz-Expires must be a number of seconds", code=code) from None
    if not 0 <= expires <= MAX_EXPIRES_S:
        raise InvalidRequest(
            f"X-Amz-Expires must be between 0 and {MAX_EXPIRES_S} seconds (7 days), not {expires}", code=code
        )
    return Claim(
        credential=_credential(params["X-Amz-Credential"], code),
        signed_headers=tuple(params["X-Amz-SignedHeaders"].split(";")),
        signature=params["X-Amz-Signature"],
        amz_date=params["X-Amz-Date"],
        payload=UNSIGNED_PAYLOAD,
        expires_s=expires,
    )


def _credential(value: str, code: str) -> Credential:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise InvalidRequest(
            f"the credential {value!r} is malformed; expected ACCESS_KEY_ID/YYYYMMDD/REGION/s3/aws4_request",
            code=code,
        )
    return Credential(*parts[:4])


def _http_date_to_amz(value: str | None) -> str:
    if value is None:
        raise denied("AccessDenied", "the request is signed but carries neither X-Amz-Date nor Date")
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise denied("AccessDenied", f"the Date header {value!r} is not an HTTP date") from None
    return time.strftime("%Y%m%dT%H%M%SZ", dt.utctimetuple())


def amz_time(amz_date: str) -> float:
    if not _AMZ_DATE.fullmatch(amz_date):
        raise denied("AccessDenied", f"X-Amz-Date {amz_date!r} is not in the form YYYYMMDDTHHMMSSZ")
    return float(timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _aws_quote(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(query: Query, *, presigned: bool) -> str:
    pairs = sorted(
        (_aws_quote(k), _aws_quote(v)) for k, v in query if not (presigned and k == "X-Amz-Signature")
    )
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_headers(headers: Headers, signed: tuple[str, ...]) -> str:
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name, []).append(" ".join(value.split()))
    return "".join(f"{name}:{','.join(values.get(name, []))}\n" for name in signed)


def canonical_request(
    method: str, path: str, query: Query, headers: Headers, claim: Claim
) -> str:
    return "\n".join((
        method,
        path,
        canonical_query(query, presigned=claim.expires_s is not None),
        canonical_headers(headers, claim.signed_headers),
        ";".join(claim.signed_headers),
        claim.payload,
    ))  # fmt: skip


def string_to_sign(claim: Claim, canonical: str) -> str:
    digest = hashlib.sha256(_encode(canonical)).hexdigest()
    return f"{ALGORITHM}\n{claim.amz_date}\n{claim.credential.scope}\n{digest}"


def _encode(text: str) -> bytes:
    # Header values arrive as bytes and are held decoded as latin-1; paths and queries are
    # percent-encoded ASCII; so latin-1 gives back exactly the bytes the client signed.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, _encode(text), hashlib.sha256).hexdigest()


def check_claim(claim: Claim, headers: Headers, now: float) -> None:
    """Everything about a claim that does not need the secret: its time, scope and coverage."""
    when = amz_time(claim.amz_date)
    cred = claim.credential
    if cred.date != claim.amz_date[:8]:
        raise InvalidRequest(
            f"the credential's date {cred.date} is not the request's date {claim.amz_date[:8]}",
            code="AuthorizationHeaderMalformed",
        )
    if cred.service != "s3":
        raise InvalidRequest(
            f"the credential is scoped to service {cred.service!r}; this endpoint is 's3'",
            code="AuthorizationHeaderMalformed",
        )
    if claim.expires_s is None:
        if abs(now - when) > MAX_SKEW_S:
            raise denied(
                "RequestTimeTooSkewed",
                f"the request was signed at {claim.amz_date}, more than 15 minutes from the server's "
                "time; correct the client's clock",
            )
    else:
        if now > when + claim.expires_s:
            raise denied("AccessDenied", f"Request has expired (signed at {claim.amz_date} for {claim.expires_s} s)")
        if when > now + MAX_SKEW_S:
            raise denied("AccessDenied", f"the presigned URL is dated in the future ({claim.amz_date})")
    signed = set(claim.signed_headers)
    if "host" not in signed:
        raise InvalidRequest("the signature must cover the host header", code="AuthorizationHeaderMalformed")
    unsigned = sorted({
        name for name, _ in headers
        if name.startswith("x-amz-") and name not in signed
        and not (claim.expires_s is not None and name == "x-amz-content-sha256")
    })  # fmt: skip
    if unsigned:
        raise denied(
            "AccessDenied", f"there were headers present in the request which were not signed: {', '.join(unsigned)}"
        )
    if claim.payload not in (UNSIGNED_PAYLOAD, *STREAMING) and not _HEX64.fullmatch(claim.payload):
        raise InvalidRequest(
            f"x-amz-content-sha256 {claim.payload!r} is neither a hex SHA-256 nor UNSIGNED-PAYLOAD "
            "nor a STREAMING-* form",
            code="InvalidArgument",
        )


def verify(
    claim: Claim, secret: str, method: str, raw_path: str, query: Query, headers: Headers, now: float
) -> bytes:
    """Check the claim against the secret; return the signing key (chunk signatures chain from it).

    The path is taken as the client sent it and, failing that, re-encoded as AWS specifies, so
    clients that escape a few characters differently still match."""
    check_claim(claim, headers, now)
    cred = claim.credential
    key = signing_key(secret, cred.date, cred.region, cred.service)
    normalized = quote(unquote_to_bytes(raw_path), safe="/~")
    for path in dict.fromkeys((raw_path, normalized)):
        canonical = canonical_request(method, path, query, headers, claim)
        if hmac.compare_digest(sign(key, string_to_sign(claim, canonical)), claim.signature):
            return key
    raise denied(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    )


def chunk_signature(key: bytes, claim: Claim, previous: str, chunk_sha256: str) -> str:
    text = f"AWS4-HMAC-SHA256-PAYLOAD\n{claim.amz_date}\n{claim.credential.scope}\n{previous}\n{EMPTY_SHA256}\n{chunk_sha256}"
    return sign(key, text)


def trailer_signature(key: bytes, claim: Claim, previous: str, trailer: bytes) -> str:
    digest = hashlib.sha256(trailer).hexdigest()
    return sign(key, f"AWS4-HMAC-SHA256-TRAILER\n{claim.amz_date}\n{claim.credential.scope}\n{previous}\n{digest}")
