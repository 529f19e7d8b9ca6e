"""Pages' forms: reading a posted form, and the service's validation problems as words beside fields.

Validation is the service's own (the same :class:`~tenants.errors.FieldProblem` codes the API
answers with); a page only words each problem for a person, in their language, naming the field
("Enter your email"), never "invalid" or a code.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, TypeVar

import msgspec
from litestar import Request

from services.validation import decode_all, validate
from services.web.i18n import N_, translate
from tenants.errors import FieldProblem, ProblemError

T = TypeVar("T", bound=msgspec.Struct)

#: How each stable problem code is said beside a field; ``{label}`` is the field's label, lower-case
#: in English where it runs inside a sentence.
FIELD_MESSAGES: Mapping[str, str] = {
    "required": N_("Enter {label}."),
    "too_long": N_("{label} is too long; shorten it."),
    "too_short": N_("{label} is too short; add to it."),
    "wrong_type": N_("Enter {label} in the form shown."),
    "out_of_range": N_("{label} is outside the allowed range."),
    "not_allowed": N_("Choose {label} from the list."),
    "unknown_locale": N_("Choose {label} from the list."),
    "unknown_industry": N_("Choose {label} from the list."),
    "unknown_timezone": N_("Enter a time zone such as Asia/Shanghai."),
    "unknown_role": N_("Choose {label} from the list."),
    "invalid_email": N_("Enter an email address like name@example.com."),
    "invalid_slug": N_("Use 3–63 lower-case letters, digits and dashes."),
    "unknown_field": N_("{label} is not part of this form."),
    # The codes of the records service's field checks (form steps of runs use them too).
    "below_min": N_("{label} is too small; enter a larger value."),
    "above_max": N_("{label} is too large; enter a smaller value."),
    "not_finite": N_("Enter {label} as a number."),
    "too_precise": N_("{label} has too many decimal places."),
    "invalid_currency": N_("Enter {label} as an amount of money."),
    "wrong_currency": N_("Enter {label} in the currency shown."),
    "not_an_option": N_("Choose {label} from the list."),
    "invalid_date": N_("Enter {label} as a real date."),
    "invalid_datetime": N_("Enter {label} as a real date and time."),
    "timezone_required": N_("Enter {label} as a real date and time."),
    "invalid_phone": N_("Enter {label} as a phone number, like 138 0013 8000."),
    "pattern_mismatch": N_("Enter {label} in the form shown."),
    "invalid_id": N_("Choose {label} from the list."),
    "not_a_member": N_("Choose {label} from the members of this workspace."),
    "file_not_found": N_("Upload {label} again."),
    "photos_required": N_("Add photos: at least {count}."),
    "checklist_incomplete": N_("Tick every item of the checklist."),
    # The onboarding wizard's and the members page's.
    "packs_required": N_("Choose at least one pack."),
    "choose_member": N_("Choose a member for this role."),
    "key_unavailable": N_("{label} is taken or not valid: use lower-case letters, digits and _, unused by a table."),
    "unknown_pack_role": N_("Choose {label} from the list."),
    "already_member": N_("This person is already a member of this workspace."),
    # Apps & API's.
    "invalid_redirect_uri": N_(
        "Enter each address in full, starting with https:// and without #; http:// only for localhost."
    ),
    "too_many": N_("{label}: there are too many; remove some."),
    "invalid_choice": N_("Choose {label} from the list."),
    "unknown_scope": N_("Choose {label} from the list."),
    "scope_above_role": N_("Your role cannot allow some of these: untick them."),
    "public_client": N_(
        "A public app has no secret, so it cannot act on its own: choose no role, or a confidential app."
    ),
    "role_too_high": N_("Choose {label} no higher than your own role."),
    "invalid_url": N_("Enter {label} as an address starting with https://."),
}
#: How a refusal that concerns the whole form (no one field) is said, by its stable code.
FORM_MESSAGES: Mapping[str, str] = {
    "invalid_credentials": N_("The email or password is wrong. Check both, or set a new password."),
    "email_taken": N_("An account with this email already exists. Sign in instead."),
    "signup_conflict": N_("This email was just used to sign up. Sign in instead."),
    "token_invalid": N_("This link is not valid. Ask for a new one."),
    "token_used": N_("This link was already used. Sign in, or ask for a new one."),
    "token_expired": N_("This link has expired. Ask for a new one."),
    "sign_in_to_accept": N_("An account with this email exists. Sign in first, then open the link again."),
    "invitation_email_mismatch": N_(
        "This invitation was sent to another email address. Sign out, then open the link again."
    ),
    "already_member": N_("You are already a member of this workspace."),
    "wrong_password": N_("The current password is wrong."),
    "login_rate_limited": N_("Too many tries. Wait a minute, then try again."),
    "mail_rate_limited": N_("Too many mails were asked for. Wait a minute, then try again."),
    "rate_limited": N_("Too many tries. Wait a minute, then try again."),
    "tenant_suspended": N_("This workspace is suspended."),
    "owner_required": N_("Only an owner can give or take away the owner role."),
    "last_owner": N_("A workspace keeps at least one owner: make someone else an owner first."),
    "invitation_not_found": N_("This invitation was already accepted or revoked."),
    "member_not_found": N_("This person is no longer a member of this workspace."),
    "pack_role_not_found": N_("This role is no longer part of an installed pack."),
}
# Problems whose service message is already in the person's language (password advice).
WORDED_BY_SERVICE = frozenset({"password_too_short", "password_too_weak", "password_too_long"})
FALLBACK_MESSAGE = N_("Check {label}.")


async def form_fields(request: Request[Any, Any, Any], *, lists: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The posted form as a dict: empty answers left out (an optional field left blank is absent),
    ``csrf_token`` and ``next`` dropped; a name in ``lists`` keeps all its values as a list."""
    form = await request.form()
    fields: dict[str, Any] = {}
    for key in form:
        if key in {"csrf_token", "next"}:
            continue
        if key in lists:
            fields[key] = [v for v in form.getall(key) if isinstance(v, str) and v.strip()]
            continue
        value = form.get(key)
        if isinstance(value, str):
            value = value.strip() if key not in {"password", "new_password", "current_password"} else value
            if value:
                fields[key] = value
    return fields


def decode_form(struct_type: type[T], fields: Mapping[str, Any]) -> T:
    """The form as the service's input struct, with every problem listed (as the API would list them)."""
    data = decode_all(struct_type, msgspec.json.encode(dict(fields)))
    validate(data)
    return data


def field_name(problem: FieldProblem) -> str:
    return problem.pointer.lstrip("/").split("/", 1)[0] or "form"


def field_message(problem: FieldProblem, label: str, locale: str, **params: object) -> str:
    """The words for ``problem`` beside the field labelled ``label``; ``params`` fill a message's
    other placeholders (``count``)."""
    if problem.code in WORDED_BY_SERVICE:
        return problem.message
    template = FIELD_MESSAGES.get(problem.code, FALLBACK_MESSAGE)
    lowered = label if locale != "en" or template.startswith("{label}") else label[:1].lower() + label[1:]
    return translate(template, locale, label=lowered, **params)


def form_errors(error: ProblemError, labels: Mapping[str, str], locale: str, **params: object) -> dict[str, str]:
    """Field name → the words for its first problem, in the order the form shows its fields.

    ``labels`` maps each field of the form to its label (already translated). A problem with no
    field of the form (a conflict, a refused action) is keyed ``form``, worded from the error's own
    translated detail. ``params`` fill the messages' other placeholders (``count``).
    """
    found: dict[str, str] = {}
    for problem in error.errors:
        name = field_name(problem)
        if name in labels and name not in found:
            found[name] = field_message(problem, labels[name], locale, **params)
    if not found:
        message = FORM_MESSAGES.get(error.code)
        found["form"] = translate(message, locale) if message else error.worded(partial(translate, locale=locale))
    ordered = {name: found[name] for name in labels if name in found}
    return {**ordered, **{k: v for k, v in found.items() if k not in ordered}}
