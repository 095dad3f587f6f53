"""The OpenAPI 3.1 document of the REST API (served at /api/openapi.json).

A test checks it against the URL table: every route documented, nothing documented that is
not routed.
"""

from __future__ import annotations

from typing import Any

from .models import PRIORITIES, ROLES, TYPES

_ERROR = {"$ref": "#/components/responses/Error"}


def _ok(description: str, schema: dict[str, Any] | None = None,
        content_type: str = "application/json") -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = {content_type: {"schema": schema}}
    return response


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _op(summary: str, responses: dict[str, Any], *, who: str, params: list[Any] | None = None,
        body: dict[str, Any] | None = None, public: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "description": f"Who: {who}.",
                          "responses": {**responses, "4XX": _ERROR}}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if public:
        op["security"] = []
    return op


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_CURSOR = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}  # an SQLite INTEGER id
_ID = {"name": "id", "in": "path", "required": True, "schema": _CURSOR}
_TENANT = {"name": "X-Tenant-ID", "in": "header", "required": False,
           "schema": {"type": "string"}, "description": "Must equal the token's tenant_id, "
           "as must the tenant_id query parameter when both are given (else 403 "
           "tenant_mismatch)."}
_USER = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}
_TEMPLATE = [{"name": "type", "in": "path", "required": True, "schema": {"type": "string"}},
             {"name": "channel", "in": "path", "required": True,
              "schema": {"type": "string", "enum": ["email", "sms", "push", "webhook"]}}]
_TENANT_DEFAULT = {"name": "tenant_default", "in": "query", "required": False,
                   "schema": {"type": "boolean"}, "description": "The tenant's defaults (admin)."}
# One Server-Sent Event as a client parses it: `data` is JSON text (the `connected` event's is
# {connection_id, user_id, tenant_id, last_id}; a notification's is a Notification).
_SSE_EVENT = {
    "type": "object", "required": ["data"],
    "properties": {
        "event": {"type": "string", "enum": ["connected", "reset", "notification",
                                             "notification_deleted", "stats_update",
                                             "heartbeat", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
_TEXT_PATTERN = r"^[^\x00]*$"  # no NUL (nor lone surrogates, which JSON Schema cannot say)
_ID_TEXT = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _TEXT_PATTERN}
_CHANNEL_VALUE = {"oneOf": [{"type": "boolean"}, {"enum": ["offline", "unacknowledged"]}]}
_IN_APP_VALUE = {"oneOf": [{"type": "boolean"}, {"const": "offline"}],
                 "description": "false: not pushed live on WebSocket or SSE (nor replayed); "
                                "the inbox keeps it. \"offline\" is accepted and pushes as "
                                "true does (a live push only ever reaches a connected user)."}
_ACTION = {"type": "object", "required": ["label", "url"], "additionalProperties": False,
           "properties": {"label": {"type": "string", "minLength": 1, "maxLength": 40,
                                    "pattern": r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$"},
                          "url": {"type": "string", "format": "uri", "maxLength": 2048,
                                  "pattern": r"^https?://[^\s/?#]+[^\s]*$",
                                  "description": "An http(s) link the reader's browser "
                                                 "opens; tidings never fetches it."}}}
_ACTIONS = {"type": "array", "items": _ACTION, "maxItems": 3,
            "examples": [[{"label": "Open", "url": "https://ci.example.com/builds/7"}]]}
_GROUP = {"type": "string", "maxLength": 200, "pattern": _TEXT_PATTERN,
          "examples": ["build-7"], "description": "A thread's name, for clients to group by."}
_COUNTS = {"type": "object", "properties": {"total": {"type": "integer"},
                                            "unread": {"type": "integer"}}}
_DELIVERY = {"type": "object", "properties": {"websocket": {"type": "integer"},
                                              "sse": {"type": "integer"}}}

SCHEMAS: dict[str, Any] = {
    "Notification": {
        "type": "object",
        "required": ["id", "tenant_id", "user_id", "type", "title", "priority", "created_at"],
        "properties": {
            "id": {"type": "integer", "description": "Only grows; the SSE id and resume cursor."},
            "tenant_id": {"type": "string"},
            "user_id": {"type": ["string", "null"], "description": "null: tenant-wide"},
            "type": {"type": "string", "enum": list(TYPES)},
            "title": {"type": "string"},
            "message": {"type": "string"},
            "data": {"type": "object"},
            "priority": {"type": "string", "enum": list(PRIORITIES)},
            "created_at": {"type": "string", "format": "date-time"},
            "read_at": {"type": ["string", "null"], "format": "date-time"},
            "group": {**_GROUP, "description": "Only when it has one."},
            "actions": {**_ACTIONS, "description": "Only when it has some."},
            "key": {"type": "string", "description": "Only when given at create.",
                    "examples": ["build-7"]},
            "replaces": {"type": "integer", "description": "The id of the notification with "
                         "the same key (and recipients) that this one replaced; that one has "
                         "left inboxes, counts and replays. Only when it replaced one.",
                         "examples": [41]},
            "expires_at": {"type": "string", "format": "date-time",
                           "description": "Only when given (as expires_at or ttl): after it, "
                           "it leaves inboxes, counts and replays.",
                           "examples": ["2030-01-01T12:00:00.000Z"]},
        },
    },
    "NotificationDeleted": {
        "type": "object", "required": ["id", "reason", "event_id"],
        "description": "A stream entry (WebSocket frame with type notification_deleted; SSE "
                       "event notification_deleted whose id: is event_id): a notification "
                       "recalled by an admin or service, or expired. Sent live and on resume "
                       "to clients that could have seen it (ids up to their cursor).",
        "properties": {
            "id": {"type": "integer", "description": "The notification's id."},
            "reason": {"type": "string", "enum": ["recalled", "expired"]},
            "event_id": {"type": "integer", "description": "From the notification id "
                         "sequence: a resume cursor like a notification id."},
        },
        "examples": [{"id": 42, "reason": "recalled", "event_id": 57}],
    },
    "NewNotification": {
        "type": "object", "required": ["title"],
        "description": "Exactly one of user_id, user_ids or broadcast. `data` holds at most 32 "
                       "nested levels and 64 KiB as JSON; no text may hold NUL or a lone "
                       "surrogate.",
        "oneOf": [
            {"required": ["user_id"], "not": {"anyOf": [{"required": ["user_ids"]},
                                                        {"required": ["broadcast"]}]}},
            {"required": ["user_ids"], "not": {"anyOf": [{"required": ["user_id"]},
                                                         {"required": ["broadcast"]}]}},
            {"required": ["broadcast"], "not": {"anyOf": [{"required": ["user_id"]},
                                                          {"required": ["user_ids"]}]}},
        ],
        "properties": {
            "user_id": _ID_TEXT,
            "user_ids": {"type": "array", "items": _ID_TEXT, "minItems": 1, "maxItems": 1000},
            "broadcast": {"const": True},
            "title": {"type": "string", "maxLength": 500, "pattern": r"^[^\x00]*[^\x00\s][^\x00]*$"},
            "message": {"type": ["string", "null"], "maxLength": 10000,
                        "pattern": _TEXT_PATTERN},
            "type": {"type": "string", "enum": list(TYPES), "default": "info"},
            "priority": {"type": "string", "enum": list(PRIORITIES), "default": "normal"},
            "data": {"type": ["object", "null"], "maxProperties": 1000},
            "channels": {"type": ["array", "null"], "items": {
                "type": "string", "enum": ["in_app", "email", "sms", "push", "webhook"]}},
            "group": {"type": ["string", "null"], "maxLength": 200, "pattern": _TEXT_PATTERN,
                      "description": "A thread's name; GET /api/notifications?group= "
                                     "filters by it."},
            "actions": {**_ACTIONS, "type": ["array", "null"],
                        "description": "Buttons: at most 3, each a label (at most 40 "
                                       "characters) and an http(s) URL; carried into web "
                                       "push payloads and as links in emails."},
            "send_at": {"type": ["string", "null"], "format": "date-time",
                        "examples": ["2026-11-24T08:00:00Z"],
                        "description": "Send later (at most 30 days ahead; without an offset "
                                       "it is UTC): 202 with the scheduled entry. It gets "
                                       "its id, and is pushed, only then."},
            "key": {"type": ["string", "null"], "minLength": 1, "maxLength": 200,
                    "pattern": _TEXT_PATTERN, "examples": ["build-7"],
                    "description": "Replaces the live notification with this key of the same "
                                   "recipients (each user of user_ids its own; a broadcast the "
                                   "tenant-wide one). The new one carries `replaces`; the old "
                                   "one's unsent deliveries are skipped (\"replaced\")."},
            "ttl": {"type": ["integer", "null"], "minimum": 1, "maximum": 366 * 86400,
                    "examples": [300],
                    "description": "Seconds until it expires; not with expires_at."},
            "expires_at": {"type": ["string", "null"], "format": "date-time",
                           "examples": ["2030-01-01T12:00:00Z"],
                           "description": "When it expires: in the future, at most 366 days "
                                          "ahead, with a time zone. After it, it leaves "
                                          "inboxes, counts and replays; connections get "
                                          "notification_deleted (reason expired) within one "
                                          "housekeeping interval; unsent deliveries are "
                                          "skipped (\"expired\"); web push carries the time "
                                          "left as its TTL."},
        },
        "examples": [{"user_id": "alice", "title": "Build 7 passed", "key": "build-7"},
                     {"user_id": "alice", "title": "Your code is 123456", "ttl": 300}],
    },
    "Scheduled": {
        "type": "object", "required": ["id", "send_at", "created_at", "title"],
        "description": "A notification request to send later: its id, times, and the "
                       "request's fields (user_id, user_ids or broadcast; optional fields "
                       "only when given).",
        "properties": {
            "id": {"type": "string", "examples": ["sch_5f0c3a9e1b2d4c6e8a7b9d1f"]},
            "send_at": {"type": "string", "format": "date-time"},
            "created_at": {"type": "string", "format": "date-time"},
            "user_id": {"type": "string"},
            "user_ids": {"type": "array", "items": {"type": "string"}},
            "broadcast": {"const": True},
            "title": {"type": "string"}, "message": {"type": "string"},
            "type": {"type": "string"}, "priority": {"type": "string"},
            "data": {"type": "object"},
            "channels": {"type": "array", "items": {"type": "string"}},
            "group": _GROUP, "actions": _ACTIONS,
        },
    },
    "Recipient": {
        "type": "object",
        "properties": {"user_id": {"type": "string", "readOnly": True},
                       "email": {"type": ["string", "null"], "format": "email"},
                       "phone": {"type": ["string", "null"], "pattern": r"^\+[1-9]\d{6,14}$"},
                       "timezone": {"type": ["string", "null"], "examples": ["Europe/Berlin"]},
                       "locale": {"type": ["string", "null"], "examples": ["en", "pt-BR"]}},
    },
    "Preferences": {
        "type": "object",
        "properties": {
            "channels": {"type": "object", "description": "default or a notification type -> "
                         "channel -> true, false, \"offline\" or (not in_app) "
                         "\"unacknowledged\"",
                         "additionalProperties": {"type": "object", "properties": {
                             "in_app": _IN_APP_VALUE,
                             **{c: _CHANNEL_VALUE for c in ("email", "sms", "push",
                                                            "webhook")}}}},
            "quiet_hours": {"type": ["object", "null"], "required": ["start", "end"],
                            "properties": {
                "start": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
                "end": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"}}},
            "digest": {"type": "string", "enum": ["off", "hourly", "daily"]},
            "escalate_after": {"type": "integer", "minimum": 1, "maximum": 7 * 24 * 3600,
                               "description": "Seconds a live user has to acknowledge a "
                                              "notification before an \"unacknowledged\" "
                                              "channel sends it (default 60)."},
        },
    },
    "Receipt": {
        "type": "object", "required": ["user_id", "read_at", "connections"],
        "properties": {
            "user_id": {"type": "string"},
            "read_at": {"type": ["string", "null"], "format": "date-time"},
            "acknowledged_at": {"type": ["string", "null"], "format": "date-time",
                                "description": "The user's first acknowledgement"},
            "connections": {"type": "array", "items": {"type": "object", "properties": {
                "connection_id": {"type": "string"},
                "transport": {"type": "string", "enum": ["websocket", "sse"]},
                "pushed_at": {"type": ["string", "null"], "format": "date-time"},
                "acknowledged_at": {"type": ["string", "null"], "format": "date-time"}}}},
        },
    },
    "PushSubscription": {
        "type": "object", "required": ["endpoint", "keys"],
        "properties": {"endpoint": {"type": "string", "format": "uri"},
                       "keys": {"type": "object", "required": ["p256dh", "auth"],
                                "properties": {"p256dh": {"type": "string"},
                                               "auth": {"type": "string"}}}},
    },
    "Webhook": {
        "type": "object",
        "properties": {"url": {"type": "string", "format": "uri"},
                       "secret": {"type": "string", "description": "Only when it is made."}},
    },
    "Template": {
        "type": "object",
        "properties": {"subject": {"type": "string"}, "text": {"type": "string"},
                       "html": {"type": "string"}},
    },
    "Delivery": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "channel": {"type": "string", "enum": ["email", "sms", "push", "webhook"]},
            "user_id": {"type": ["string", "null"]},
            "status": {"type": "string", "enum": ["queued", "held", "sending", "sent",
                                                  "failed", "skipped"]},
            "attempts": {"type": "integer"},
            "last_error": {"type": ["string", "null"]},
            "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
            "sent_at": {"type": ["string", "null"], "format": "date-time"},
            "created_at": {"type": "string", "format": "date-time"},
            "history": {"type": "array", "items": {"type": "object", "properties": {
                "attempt": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                "status": {"type": "string", "enum": ["sent", "failed", "retry"]},
                "error": {"type": ["string", "null"]}}}},
        },
    },
    "Suppression": {
        "type": "object",
        "properties": {"address": {"type": "string", "description": "Lower case."},
                       "reason": {"type": "string", "enum": ["bounce", "complaint", "manual"]},
                       "detail": {"type": ["string", "null"], "description": "The bounce "
                                  "subtype, the complaint's feedback type, or the admin's note"},
                       "created_at": {"type": "string", "format": "date-time"}},
    },
    "SnsMessage": {
        "type": "object", "required": ["Type"],
        "description": "An Amazon SNS message as SNS posts it to an HTTP(S) subscriber "
                       "(sent as text/plain; JSON text). Only messages whose signature "
                       "verifies with the certificate at SigningCertURL (https on "
                       "sns.REGION.amazonaws.com) are believed.",
        "properties": {
            "Type": {"type": "string", "enum": ["Notification", "SubscriptionConfirmation",
                                                "UnsubscribeConfirmation"]},
            "MessageId": {"type": "string"}, "TopicArn": {"type": "string"},
            "Subject": {"type": "string"},
            "Message": {"type": "string", "description": "For a Notification: the SES event "
                        "(JSON text) with notificationType or eventType Bounce / Complaint "
                        "and mail.messageId"},
            "Timestamp": {"type": "string"}, "Token": {"type": "string"},
            "SubscribeURL": {"type": "string"}, "SignatureVersion": {"enum": ["1", "2"]},
            "Signature": {"type": "string"}, "SigningCertURL": {"type": "string"},
        },
    },
    "TenantSettings": {
        "type": "object", "additionalProperties": False,
        "description": "Each field optional: what is not named stays as it was; null is no "
                       "limit (forever).",
        "properties": {
            "retention_days": {"type": ["integer", "null"], "minimum": 1, "maximum": 3650,
                               "description": "Remove notifications older than this."},
            "retention_count": {"type": ["integer", "null"], "minimum": 1,
                                "maximum": 10_000_000,
                                "description": "Keep only the tenant's newest N, direct and "
                                               "tenant-wide together."},
        },
    },
    "Tenant": {
        "type": "object",
        "required": ["tenant_id", "retention_days", "retention_count", "pruned_through"],
        "properties": {
            "tenant_id": {"type": "string"},
            "retention_days": {"type": ["integer", "null"]},
            "retention_count": {"type": ["integer", "null"]},
            "pruned_through": {"type": "integer", "description": "The highest id retention "
                               "removed (0: none). A stream resuming below it first gets "
                               "`reset` with reason cursor_expired."},
        },
    },
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"},
                                                "message": {"type": "string"},
                                                "field": {"type": "string"}}}},
    },
}

PATHS: dict[str, Any] = {
    "/api/notifications": {
        "post": _op(
            "Create, store and push notifications", {
                "201": _ok("Stored, then pushed. `notifications` (a list) when `user_ids` was "
                           "given. An `Idempotency-Key` seen before returns the first answer "
                           "with the header `Idempotent-Replayed: true` and creates nothing.", {
                               "type": "object", "properties": {
                                   "notification": _ref("Notification"),
                                   "notifications": {"type": "array",
                                                     "items": _ref("Notification")},
                                   "delivery": _DELIVERY}}),
                "202": _ok("Scheduled (the body had `send_at`): nothing is stored in inboxes "
                           "or pushed until then. An `Idempotency-Key` seen before returns "
                           "the first entry and schedules nothing.", {
                               "type": "object", "required": ["scheduled"],
                               "properties": {"scheduled": _ref("Scheduled")}})},
            who="admin, service", body=_ref("NewNotification"),
            params=[_TENANT, {"name": "Idempotency-Key", "in": "header", "required": False,
                              "schema": {"type": "string", "maxLength": 255}}]),
        "get": _op(
            "The caller's inbox, newest first (direct and tenant-wide)", {
                "200": _ok("A page", {"type": "object", "properties": {
                    "notifications": {"type": "array", "items": _ref("Notification")},
                    "next_before": {"type": ["integer", "null"]}}})},
            who="the user",
            params=[_TENANT, _query("unread", {"type": "boolean"}, "Only unread ones."),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 200,
                                     "default": 50}, "Page size."),
                    _query("before", _CURSOR, "Only ids below this (next page)."),
                    _query("group", _GROUP, "Only notifications of this group.")]),
    },
    "/api/scheduled": {
        "get": _op("The tenant's pending scheduled notifications, soonest first",
                   {"200": _ok("Pending entries", {"type": "object", "properties": {
                       "scheduled": {"type": "array", "items": _ref("Scheduled")}}})},
                   who="admin, service", params=[_TENANT]),
    },
    "/api/scheduled/{id}": {
        "delete": _op("Cancel a pending scheduled notification (404 once sent or cancelled, "
                      "or when it is unknown or another tenant's)", {"204": _ok("Cancelled")},
                      who="admin, service",
                      params=[{"name": "id", "in": "path", "required": True,
                               "schema": {"type": "string", "minLength": 1,
                                          "pattern": r"^[^/\x00]+$"}}, _TENANT]),
    },
    "/api/notifications/{id}": {
        "delete": _op("A user: remove a notification from the caller's own inbox. An admin or "
                      "service: recall it for every recipient; their connections get "
                      "notification_deleted (reason recalled), live and on resume, and its "
                      "unsent deliveries are skipped (\"recalled\"). 404 when there is no such "
                      "notification (in the caller's inbox, or live in the tenant)",
                      {"204": _ok("Removed or recalled")},
                      who="the user (own inbox); admin, service (recall)",
                      params=[_ID, _TENANT]),
    },
    "/api/notifications/{id}/read": {
        "post": _op("Mark one notification read; the user's connections get a stats_update",
                    {"200": _ok("Read", {"type": "object", "properties": {
                        "id": {"type": "integer"}, "stats": _COUNTS}})},
                    who="the user", params=[_ID, _TENANT]),
    },
    "/api/notifications/read-all": {
        "post": _op("Mark every notification read; the user's connections get a stats_update",
                    {"200": _ok("Read", {"type": "object", "properties": {"stats": _COUNTS}})},
                    who="the user", params=[_TENANT]),
    },
    "/api/notifications/stats": {
        "get": _op("Counts of the caller's inbox", {"200": _ok("Counts", {
            "type": "object", "properties": {"total": {"type": "integer"},
                                             "unread": {"type": "integer"},
                                             "by_type": {"type": "object"}}})},
            who="the user", params=[_TENANT]),
    },
    "/api/notifications/connections": {
        "get": _op("Live connection counts: the caller's own, or (admin, service) the "
                   "tenant's", {"200": _ok("Counts", {"type": "object", "properties": {
                       "tenant_id": {"type": "string"}, "websocket": {"type": "integer"},
                       "sse": {"type": "integer"}, "total": {"type": "integer"},
                       "users_online": {"type": "integer"}}})},
                   who="user: own; admin and service: tenant", params=[_TENANT]),
    },
    "/api/notifications/stream": {
        "get": _op("Server-Sent Events: connected, reset (when the resume cursor is before "
                   "what is kept, or after the newest id), notification (with id), "
                   "notification_deleted (with id: its event_id; data a NotificationDeleted), "
                   "stats_update, heartbeat", {"200": _ok("An event stream", _SSE_EVENT,
                                            "text/event-stream")},
                   who="the user",
                   params=[_TENANT, {"name": "Last-Event-ID", "in": "header", "required": False,
                                     "schema": _CURSOR},
                           _query("last_event_id", _CURSOR, "Replay after this id."),
                           _query("since", _CURSOR, "Same as last_event_id."),
                           _query("snapshot", {"type": "integer", "minimum": 1, "maximum": 50},
                                  "The connected event also carries `recent`: the newest N "
                                  "notifications, newest first."),
                           _query("token", {"type": "string"}, "The token, for EventSource."),
                           _query("ticket", {"type": "string"},
                                  "A ticket from POST /api/tickets instead of the token: once, "
                                  "within 30 s, on any process (401 invalid_ticket).")]),
    },
    "/api/notifications/ack": {
        "post": _op("Acknowledge notifications a client has shown (from SSE; a WebSocket sends "
                    "an ack frame). Ids that are not the caller's are ignored",
                    {"204": {"description": "Recorded"}},
                    body={"type": "object", "required": ["ids"], "additionalProperties": False,
                          "properties": {
                              "ids": {"type": "array", "minItems": 1, "maxItems": 500,
                                      "items": {"type": "integer", "minimum": 1,
                                                "maximum": 2**63 - 1}},
                              "connection_id": {"type": "string",
                                                "pattern": "^(ss-[0-9a-f]{8}-[0-9]{1,18})?$",
                                                "description": "The SSE connection that showed "
                                                               "them (from `connected`); "
                                                               "without it every SSE connection "
                                                               "of the user pushed them counts"}}},
                    who="the user", params=[_TENANT]),
    },
    "/api/notifications/{id}/receipts": {
        "get": _op("Who was pushed, acknowledged and read a notification: one entry per "
                   "recipient, with each connection it was pushed to",
                   {"200": _ok("Receipts", {"type": "object", "properties": {
                       "receipts": {"type": "array", "items": _ref("Receipt")}}})},
                   who="admin, service; the user for its own entry", params=[_ID, _TENANT]),
    },
    "/api/tickets": {
        "post": _op("A connection ticket: a WebSocket or SSE URL carries it (?ticket=) instead "
                    "of a long-lived token. It works once, for 30 seconds, on any process; "
                    "REST calls do not take it", {"201": _ok("The ticket", {
                        "type": "object", "properties": {
                            "ticket": {"type": "string"},
                            "expires_in": {"type": "integer", "const": 30}}})},
                    who="any role", params=[_TENANT]),
    },
    "/api/notifications/{id}/deliveries": {
        "get": _op("Every email, SMS, push and webhook delivery of a notification, with each "
                   "attempt", {"200": _ok("Deliveries", {"type": "object", "properties": {
                       "deliveries": {"type": "array", "items": _ref("Delivery")}}})},
                   who="admin, service; the user for its own", params=[_ID, _TENANT]),
    },
    "/api/users/{user_id}": {
        "get": _op("A user's addresses", {"200": _ok("The user", _ref("Recipient"))},
                   who="admin, service; the user for itself", params=[_USER, _TENANT]),
        "put": _op("Store a user's addresses (null clears one)",
                   {"200": _ok("Stored", _ref("Recipient"))}, body=_ref("Recipient"),
                   who="admin, service; the user for itself", params=[_USER, _TENANT]),
    },
    "/api/preferences": {
        "get": _op("The caller's effective preferences (its own over the tenant's defaults "
                   "over the built-in ones)", {"200": _ok("Preferences", _ref("Preferences"))},
                   who="the user; ?tenant_default=true: admin", params=[_TENANT_DEFAULT, _TENANT]),
        "put": _op("Change preferences: only the channels, quiet_hours, digest and "
                   "escalate_after given "
                   "change", {"200": _ok("The effective preferences", _ref("Preferences"))},
                   body=_ref("Preferences"), who="the user; ?tenant_default=true: admin",
                   params=[_TENANT_DEFAULT, _TENANT]),
    },
    "/api/push/vapid-public-key": {
        "get": _op("The VAPID public key for PushManager.subscribe (404 channel_off when push "
                   "is off)", {"200": _ok("The key", {"type": "object", "properties": {
                       "key": {"type": "string", "description": "base64url uncompressed P-256 "
                                                                "point"}}})},
                   who="anyone", public=True),
    },
    "/api/push/subscriptions": {
        "post": _op("Register the browser's PushSubscription for the caller (409 when the "
                    "endpoint belongs to another user of the tenant)",
                    {"201": _ok("Registered", {"type": "object", "properties": {
                        "endpoint": {"type": "string"}}})},
                    body=_ref("PushSubscription"), who="the user", params=[_TENANT]),
        "delete": _op("Forget a subscription, by endpoint (query or JSON body)",
                      {"204": _ok("Removed")}, who="the user",
                      params=[_TENANT, _query("endpoint", {"type": "string"},
                                              "The subscription's endpoint.")]),
    },
    "/api/webhook": {
        "get": _op("The tenant's webhook URL", {"200": _ok("The webhook", _ref("Webhook"))},
                   who="admin", params=[_TENANT]),
        "put": _op("Set the tenant's webhook URL; the signing secret is made and shown once "
                   "(201), later changes keep it (200)",
                   {"200": _ok("Changed", _ref("Webhook")), "201": _ok("Made", _ref("Webhook"))},
                   body={"type": "object", "required": ["url"],
                         "properties": {"url": {"type": "string", "format": "uri"}}},
                   who="admin", params=[_TENANT]),
        "delete": _op("Remove the tenant's webhook", {"204": _ok("Removed")}, who="admin",
                      params=[_TENANT]),
    },
    "/api/tenant": {
        "get": _op("The tenant's settings: retention, and how far it has removed",
                   {"200": _ok("The settings", _ref("Tenant"))}, who="admin", params=[_TENANT]),
        "put": _op("Change the tenant's retention; housekeeping enforces it at once and then "
                   "every --housekeeping-interval seconds",
                   {"200": _ok("The settings as they are now", _ref("Tenant"))},
                   body=_ref("TenantSettings"), who="admin", params=[_TENANT]),
    },
    "/api/templates/{type}/{channel}": {
        "get": _op("A tenant's template for one notification type and channel",
                   {"200": _ok("The template", _ref("Template"))}, who="admin",
                   params=[*_TEMPLATE, _TENANT]),
        "put": _op("Store a template (sandboxed Jinja2 over the notification's fields); one "
                   "that does not compile or render is refused naming the part",
                   {"200": _ok("Stored", _ref("Template"))}, body=_ref("Template"),
                   who="admin", params=[*_TEMPLATE, _TENANT]),
        "delete": _op("Back to the built-in template", {"204": _ok("Removed")}, who="admin",
                      params=[*_TEMPLATE, _TENANT]),
    },
    "/api/suppressions": {
        "get": _op("The tenant's suppression list (addresses email is not sent to), in "
                   "address order; page with next_after",
                   {"200": _ok("A page", {"type": "object", "properties": {
                       "suppressions": {"type": "array", "items": _ref("Suppression")},
                       "next_after": {"type": ["string", "null"]}}})},
                   who="admin",
                   params=[_TENANT, _query("limit", {"type": "integer", "minimum": 1,
                                                     "maximum": 500, "default": 100},
                                           "Page size."),
                           _query("after", {"type": "string"}, "Only addresses after this "
                                  "one (the previous page's next_after).")]),
        "post": _op("Suppress an address by hand (201; 200 when it was suppressed already)",
                    {"201": _ok("Added", {"type": "object", "properties": {
                        "address": {"type": "string"}, "added": {"const": True}}}),
                     "200": _ok("Already there", {"type": "object", "properties": {
                         "address": {"type": "string"}, "added": {"const": False}}})},
                    body={"type": "object", "required": ["address"], "properties": {
                        "address": {"type": "string", "format": "email"},
                        "detail": {"type": ["string", "null"], "maxLength": 500}}},
                    who="admin", params=[_TENANT]),
    },
    "/api/suppressions/{address}": {
        "delete": _op("Send email to an address again", {"204": _ok("Removed")}, who="admin",
                      params=[{"name": "address", "in": "path", "required": True,
                               "schema": {"type": "string"}}, _TENANT]),
    },
    "/api/ses/events": {
        "post": _op("Amazon SNS posts SES bounce and complaint notifications here (subscribe "
                    "this URL to the topic of the SES identity's notifications, over HTTPS). "
                    "A SubscriptionConfirmation is confirmed by fetching its SubscribeURL; a "
                    "permanent bounce or a complaint suppresses its addresses for the tenant "
                    "whose email it was (found by mail.messageId). A bad signature is 403 "
                    "invalid_signature; a certificate that could not be fetched now, 503",
                    {"200": _ok("Handled", {"type": "object", "properties": {
                        "status": {"type": "string",
                                   "enum": ["confirmed", "suppressed", "ignored"]},
                        "suppressed": {"type": "integer"}}}),
                     "503": _ok("The certificate or SubscribeURL could not be fetched: SNS "
                                "tries again", {"$ref": "#/components/schemas/Error"})},
                    who="Amazon SNS (no token: the message's signature is checked)",
                    public=True,
                    body=_ref("SnsMessage")),
    },
    "/api/openapi.json": {
        "get": _op("This document", {"200": _ok("OpenAPI 3.1", {"type": "object"})},
                   who="anyone", public=True),
    },
    "/healthz": {
        "get": _op("Health: 200 when the store (and Redis, when configured) answers and every "
                   "background task runs",
                   {"200": _ok("Healthy", {"type": "object", "properties": {
                       "status": {"const": "ok"}}}),
                    "503": _ok("Something does not answer or has stopped", {
                        "type": "object", "properties": {
                            "status": {"const": "unavailable"},
                            "problems": {"type": "object", "description": "store, broker, "
                                         "presence or background: what is wrong",
                                         "additionalProperties": {"type": "string"}}}})},
                   who="anyone", public=True),
    },
    "/metrics": {
        "get": _op("Prometheus metrics", {"200": _ok(
            "Prometheus text format 0.0.4: connections per tenant, notifications created, "
            "histograms of commit-to-push latency, group commit duration and fan-out size, "
            "channel deliveries by channel and status, connections opened and closed by "
            "reason, process metrics. The README lists every series.", {"type": "string"},
            "text/plain")},
                   who="anyone on loopback, or with the admin password as bearer", public=True),
    },
}

# SNS posts its JSON as text/plain.
PATHS["/api/ses/events"]["post"]["requestBody"]["content"]["text/plain"] = {
    "schema": {"type": "string", "contentMediaType": "application/json", "minLength": 2,
               "description": "An SnsMessage as JSON text"}}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "tidings", "version": "0.1.0",
                 "description": "Multi-tenant real-time notifications. The WebSocket at "
                                "/ws/notifications (query token or ticket, tenant_id, since, snapshot) carries the "
                                "same notifications, notification_deleted and reset frames; "
                                "see the README. Roles: "
                                + ", ".join(ROLES) + "."},
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "responses": {"Error": {"description": "A JSON error naming what is wrong",
                                    "content": {"application/json": {
                                        "schema": _ref("Error")}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }
