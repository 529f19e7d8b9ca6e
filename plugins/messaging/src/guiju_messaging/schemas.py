"""The JSON Schemas of the plugin: its settings, and each action's input and output.

The host validates an action's input and output against these; :func:`input_problems` applies
the same schema inside the plugin, for callers that bypass the host (the platform's own mail).
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from guiju_messaging.templates import LOCALES

CHANNELS: tuple[str, ...] = ("wecom", "dingtalk", "feishu", "slack")
NOTIFICATION_CHANNELS: tuple[str, ...] = ("email", *CHANNELS)
#: How many robots a tenant may configure; each has a numbered pair of secret settings.
ROBOT_SLOTS = 5
DEFAULT_MAX_ATTACHMENT_MB = 15
MAX_RECIPIENTS = 100

_LOCALE = {"type": "string", "enum": list(LOCALES)}
_RECIPIENT_LOCALE = {
    "type": "string",
    "maxLength": 35,
    "description": "The recipient's language, e.g. zh-CN or en; others fall back to the default locale.",
}


def _robot_secret_settings() -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for slot in range(1, ROBOT_SLOTS + 1):
        settings[f"robot_{slot}_webhook_url"] = {
            "type": "string",
            "title": f"Robot slot {slot}: webhook URL",
            "description": "The robot's webhook address, copied from WeCom, DingTalk, Feishu/Lark or Slack. "
            "Whoever has it can post to the group, so it is stored as a secret.",
            "maxLength": 500,
            "writeOnly": True,
        }
        settings[f"robot_{slot}_secret"] = {
            "type": "string",
            "title": f"Robot slot {slot}: signing secret",
            "description": "DingTalk 加签 secret (starts with SEC) or Feishu/Lark 签名校验 secret; "
            "leave empty when the robot does not sign.",
            "maxLength": 200,
            "writeOnly": True,
        }
    return settings


SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "smtp_host": {
            "type": "string",
            "title": "SMTP server",
            "description": "Host name of the outgoing mail server, e.g. smtp.exmail.qq.com.",
            "maxLength": 253,
            "pattern": r"^[A-Za-z0-9.\-]+$",
        },
        "smtp_port": {
            "type": "integer",
            "title": "SMTP port",
            "description": "587 for STARTTLS, 465 for TLS, 25 for an internal relay.",
            "minimum": 1,
            "maximum": 65535,
            "default": 587,
        },
        "smtp_security": {
            "type": "string",
            "title": "Connection security",
            "description": "starttls: plain connection upgraded with STARTTLS (port 587); tls: TLS from the "
            "first byte (port 465); none: no encryption (only for a relay inside your own network).",
            "enum": ["starttls", "tls", "none"],
            "default": "starttls",
        },
        "smtp_username": {
            "type": "string",
            "title": "SMTP user name",
            "description": "Leave empty when the server does not ask to log in.",
            "maxLength": 320,
        },
        "smtp_password": {
            "type": "string",
            "title": "SMTP password",
            "description": "The password or app password (授权码) of the SMTP user.",
            "maxLength": 500,
            "writeOnly": True,
        },
        "smtp_from_address": {
            "type": "string",
            "title": "From address",
            "description": "The sender's address; most providers require it to be the SMTP user's own.",
            "format": "email",
            "maxLength": 254,
        },
        "smtp_from_name": {
            "type": "string",
            "title": "From name",
            "description": "The sender's name shown to recipients, e.g. your company's name.",
            "maxLength": 200,
        },
        "smtp_verify_tls": {
            "type": "boolean",
            "title": "Verify the server's certificate",
            "description": "Keep on: it is what stops someone in the middle from reading your mail.",
            "default": True,
        },
        "smtp_ca_certificate": {
            "type": "string",
            "title": "Extra trusted CA certificate (PEM)",
            "description": "For a server whose certificate is issued by your own CA: that CA's certificate "
            "in PEM, trusted in addition to the public ones.",
            "maxLength": 20000,
        },
        "smtp_timeout_seconds": {
            "type": "number",
            "title": "SMTP timeout (seconds)",
            "description": "How long to wait for the mail server at each step.",
            "minimum": 1,
            "maximum": 60,
            "default": 20,
        },
        "max_attachment_mb": {
            "type": "number",
            "title": "Attachment size limit (MB)",
            "description": "The most an e-mail's attachments may weigh together; keep it under your provider's "
            "limit (attachments grow by a third when encoded).",
            "exclusiveMinimum": 0,
            "maximum": 35,
            "default": DEFAULT_MAX_ATTACHMENT_MB,
        },
        "default_locale": {
            **_LOCALE,
            "title": "Default language",
            "description": "The language of messages to recipients whose language is unknown, and of robots "
            "without a language. English when unset.",
        },
        "notification_channels": {
            "type": "array",
            "title": "Notification channels",
            "description": "Where the workspace's notifications are sent on: e-mail to each recipient, and/or the "
            "first robot configured for each chat channel.",
            "items": {"type": "string", "enum": list(NOTIFICATION_CHANNELS)},
            "uniqueItems": True,
            "default": ["email"],
        },
        "robots": {
            "type": "array",
            "title": "Robots",
            "description": "The group robots messages may be posted to. Each names the slot whose webhook URL and "
            "signing secret it uses.",
            "maxItems": ROBOT_SLOTS,
            "items": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "title": "Name",
                        "description": "How automations name this robot, e.g. sales-team.",
                        "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$",
                    },
                    "channel": {
                        "type": "string",
                        "title": "Channel",
                        "description": "feishu covers Lark too.",
                        "enum": list(CHANNELS),
                    },
                    "locale": {**_LOCALE, "title": "Language", "description": "The language posts are written in."},
                    "slot": {
                        "type": "integer",
                        "title": "Secret slot",
                        "description": "Which 'Robot slot N' settings hold this robot's webhook URL and secret.",
                        "minimum": 1,
                        "maximum": ROBOT_SLOTS,
                    },
                },
                "required": ["name", "channel", "slot"],
                "additionalProperties": False,
            },
        },
        **_robot_secret_settings(),
    },
}

# ---------------------------------------------------------------- e-mail

_RECIPIENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "address": {"type": "string", "format": "email", "maxLength": 254},
        "name": {"type": "string", "maxLength": 200},
        "locale": _RECIPIENT_LOCALE,
    },
    "required": ["address"],
    "additionalProperties": False,
}


def _recipients(description: str, *, min_items: int = 0) -> dict[str, Any]:
    return {
        "type": "array",
        "description": description,
        "items": _RECIPIENT,
        "minItems": min_items,
        "maxItems": MAX_RECIPIENTS,
    }


_EMAIL_TEMPLATE_LOCALE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "subject": {"type": "string", "minLength": 1, "maxLength": 2000},
        "text": {"type": "string", "maxLength": 500_000},
        "html": {"type": "string", "maxLength": 1_000_000},
    },
    "required": ["subject"],
    "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
    "additionalProperties": False,
}

SEND_EMAIL_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "to": _recipients("Who the mail is to; each may say their language.", min_items=1),
        "cc": _recipients("Copied recipients."),
        "bcc": _recipients("Blind-copied recipients: not shown to the others."),
        "reply_to": _RECIPIENT,
        "subject": {"type": "string", "minLength": 1, "maxLength": 2000},
        "text": {"type": "string", "maxLength": 500_000},
        "html": {"type": "string", "maxLength": 1_000_000},
        "template": {
            "type": "object",
            "description": "Subject, text and/or HTML per language (Jinja2, rendered with variables); each "
            "recipient gets their language's rendering.",
            "properties": {locale: _EMAIL_TEMPLATE_LOCALE for locale in LOCALES},
            "minProperties": 1,
            "additionalProperties": False,
        },
        "variables": {"type": "object", "description": "The values a template uses, e.g. record, run, event."},
        "attachments": {
            "type": "array",
            "description": "Ids of files of the workspace (a record's or a run's attachments).",
            "items": {"type": "string", "minLength": 1, "maxLength": 200},
            "maxItems": 20,
            "uniqueItems": True,
        },
    },
    "required": ["to"],
    "additionalProperties": False,
    # Either a template, or a subject with a text and/or HTML body; never both.
    "if": {"required": ["template"]},
    "then": {"properties": {"subject": False, "text": False, "html": False}},
    "else": {"required": ["subject"], "anyOf": [{"required": ["text"]}, {"required": ["html"]}]},
}

SEND_EMAIL_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message_id": {"type": "string", "description": "The Message-ID of the (first) message sent."},
        "accepted": {"type": "array", "items": {"type": "string"}},
        "refused": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"address": {"type": "string"}, "reply": {"type": "string"}},
                "required": ["address", "reply"],
                "additionalProperties": False,
            },
        },
        "messages": {
            "type": "array",
            "description": "One message per language group.",
            "items": {
                "type": "object",
                "properties": {
                    "message_id": {"type": "string"},
                    "locale": {"type": ["string", "null"]},
                    "accepted": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["message_id", "locale", "accepted"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["message_id", "accepted", "refused", "messages"],
    "additionalProperties": False,
}

# ---------------------------------------------------------------- robots

_ROBOT_TEMPLATE_LOCALE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 200},
        "text": {"type": "string", "minLength": 1, "maxLength": 20_000},
    },
    "required": ["text"],
    "additionalProperties": False,
}


def robot_input_schema(channel: str, *, card_needs_link: bool) -> dict[str, Any]:
    """The input of a post to ``channel``'s robot."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "robot": {
                "type": "string",
                "description": f"The name of a configured {channel} robot; the first one when left out.",
                "maxLength": 40,
            },
            "format": {
                "type": "string",
                "enum": ["text", "markdown", "card"],
                "default": "text",
                "description": "text: plain; markdown: the vendor's markdown; card: a titled card with a button.",
            },
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "text": {"type": "string", "minLength": 1, "maxLength": 20_000},
            "link": {"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2000},
            "template": {
                "type": "object",
                "description": "Title and text per language (Jinja2, rendered with variables); the robot's "
                "language is used.",
                "properties": {locale: _ROBOT_TEMPLATE_LOCALE for locale in LOCALES},
                "minProperties": 1,
                "additionalProperties": False,
            },
            "variables": {"type": "object"},
            "mention_all": {"type": "boolean", "default": False, "description": "Mention everyone in the group."},
        },
        "additionalProperties": False,
        "if": {"required": ["template"]},
        "then": {"properties": {"title": False, "text": False}},
        "else": {"required": ["text"]},
    }
    if card_needs_link:
        schema["allOf"] = [
            {
                "if": {"properties": {"format": {"const": "card"}}, "required": ["format"]},
                "then": {"required": ["link"]},
            }
        ]
    return schema


ROBOT_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "channel": {"type": "string", "enum": list(CHANNELS)},
        "robot": {"type": "string"},
        "locale": {"type": "string", "enum": list(LOCALES)},
        "format": {"type": "string", "enum": ["text", "markdown", "card"]},
    },
    "required": ["channel", "robot", "locale", "format"],
    "additionalProperties": False,
}

# ---------------------------------------------------------------- notifications

_LOCALIZED_TEXT = {
    "oneOf": [
        {"type": "string", "minLength": 1, "maxLength": 20_000},
        {
            "type": "object",
            "properties": {locale: {"type": "string", "minLength": 1, "maxLength": 20_000} for locale in LOCALES},
            "minProperties": 1,
            "additionalProperties": False,
        },
    ]
}

DELIVER_NOTIFICATION_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "recipients": {
            "type": "array",
            "maxItems": 500,
            "items": {
                "type": "object",
                "properties": {
                    "email": {"type": "string", "format": "email", "maxLength": 254},
                    "name": {"type": "string", "maxLength": 200},
                    "locale": _RECIPIENT_LOCALE,
                    "user_id": {"type": "string", "maxLength": 100},
                },
                "additionalProperties": False,
            },
        },
        "title": {**_LOCALIZED_TEXT, "description": "The title, or one per language."},
        "body": {**_LOCALIZED_TEXT, "description": "The body (plain text), or one per language."},
        "link": {"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2000},
    },
    "required": ["recipients", "title"],
    "additionalProperties": False,
}

DELIVER_NOTIFICATION_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "channels": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "channel": {"type": "string", "enum": list(NOTIFICATION_CHANNELS)},
                    "status": {"type": "string", "enum": ["sent", "skipped", "failed"]},
                    "detail": {"type": "string"},
                    "retryable": {"type": "boolean"},
                    "recipients": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["channel", "status", "detail"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["channels"],
    "additionalProperties": False,
}


def input_problems(schema: dict[str, Any], data: object) -> list[str]:
    """Every way ``data`` breaks ``schema``, each as ``"<pointer>: <message>"``, in path order.

    Two of jsonschema's messages are rephrased to say what to do: a property a condition forbids
    (``"then": {"properties": {"x": false}}``: here, a literal field next to a template) and an
    ``anyOf`` of ``required`` (one of these fields is needed).
    """
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    problems: list[tuple[list[str], str]] = []
    for error in validator.iter_errors(data):
        path = [str(part) for part in error.absolute_path]
        pointer = "".join(f"/{part}" for part in path) or "/"
        branches = error.validator_value if error.validator == "anyOf" else None
        if error.validator is None and list(error.absolute_schema_path)[-2:] == ["then", "properties"]:
            # jsonschema reports a false property schema at the object holding it, with the value as
            # its instance: the object is found again by the path.
            instance = _at(data, path)
            forbidden = [key for key, rule in _at(schema, error.absolute_schema_path).items() if rule is False]
            for key in forbidden:
                if key in instance:
                    where = f"{pointer.rstrip('/')}/{key}"
                    problems.append(([*path, key], f"{where}: not allowed together with a template"))
        elif isinstance(branches, list) and all(set(b) == {"required"} for b in branches):
            needed = " or ".join(name for branch in branches for name in branch["required"])
            problems.append((path, f"{pointer}: needs {needed}"))
        else:
            problems.append((path, f"{pointer}: {error.message}"))
    return [message for _, message in sorted(problems, key=lambda item: item[0])]


def _at(document: object, path: Any) -> dict[str, Any]:
    """The object at ``path`` in ``document`` (an empty one when there is none)."""
    found: Any = document
    for part in path:
        if isinstance(found, dict) and part in found:
            found = found[part]
        elif isinstance(found, list) and str(part).isdigit() and int(part) < len(found):
            found = found[int(part)]
        else:
            return {}
    return found if isinstance(found, dict) else {}
