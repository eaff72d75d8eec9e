"""Workers' credentials: issued once, kept only as a hash, never read back.

``agent_id`` is a public label (``agent_haiku_3f9a1c``), shown by every
read. Dispatch and pool claims also issue each worker a secret credential
(32 hex digits) that only the worker's launch prompt or work order
carries; a report must present it. The store keeps only its hash
(``secret_hash``, and ``past_secrets`` for superseded attempts), and reads
never return those keys (:func:`public`, :func:`strip_private`). The job
rules (``state.py``) ask here who owns a sub-task and what the history may
record of a reporter.
"""

import re

from .errors import Refusal
from .ids import token as _token

SECRET_BYTES = 16
PRIVATE_KEYS = ("secret_hash", "past_secrets")
_CREDENTIAL = re.compile(r"[0-9a-f]{%d}" % (2 * SECRET_BYTES))

try:  # the C module itself: ``hashlib`` would load OpenSSL on every report
    from _blake2 import blake2b
except ImportError:  # an interpreter built without it
    from hashlib import blake2b


def digest(credential: str) -> str:
    return blake2b(credential.encode(), digest_size=16).hexdigest()


def issue(sub, label) -> str:
    """Make ``label`` the owner of ``sub`` with a fresh credential; return it.

    Only its hash is stored: the credential is handed to the worker once,
    by the write that issued it, and no read gives it back.
    """
    credential = _token(SECRET_BYTES)
    sub["agent_id"] = label
    sub["secret_hash"] = digest(credential)
    return credential


def verifies(sub, credential) -> bool:
    """True when ``credential`` is the one issued for ``sub``'s current owner."""
    return credential is not None and bool(sub.get("secret_hash")) and digest(credential) == sub["secret_hash"]


def owns(sub, agent_id) -> bool:
    """True when ``agent_id`` may report for ``sub``'s current owner.

    A dispatched or claimed sub-task takes only the credential issued for
    it (its label is public). One a person or script claimed by reporting
    ``running`` with an id of its own (no credential was ever issued) takes
    that id, as before.
    """
    if sub.get("secret_hash"):
        return verifies(sub, agent_id)
    return agent_id is not None and agent_id == sub["agent_id"]


def past_label(sub, agent_id):
    """The label of the superseded attempt whose credential ``agent_id`` is, or None."""
    if agent_id is None or not sub.get("past_secrets"):
        return None
    hashed = digest(agent_id)
    return next((label for label, past in sub["past_secrets"] if past == hashed), None)


def public_id(sub, agent_id):
    """What the history may record for ``agent_id``: never a credential.

    A credential of this sub-task is recorded as its label; one issued for
    another sub-task is refused (recording or storing it would publish it).
    """
    if agent_id is None:
        return None
    if verifies(sub, agent_id):
        return sub["agent_id"]
    past = past_label(sub, agent_id)
    if past is not None:
        return past
    if _CREDENTIAL.fullmatch(agent_id):
        raise Refusal(
            f"report refused: that --agent-id is a credential issued for another sub-task than "
            f"{sub['sub_task_id']}; a credential reports only for the sub-task of its prompt"
        )
    return agent_id


def public(sub) -> dict:
    """A copy of ``sub`` without what verifies a credential (what reads return)."""
    return {k: v for k, v in sub.items() if k not in PRIVATE_KEYS}


def strip_private(row) -> dict:
    """Remove, in place, what verifies a credential from every sub-task of ``row``; return it."""
    for sub in row["sub_tasks"]:
        for key in PRIVATE_KEYS:
            sub.pop(key, None)
    return row


def worker_view(sub, credential) -> dict:
    """What a worker is handed: the sub-task, with ``agent_id`` the credential it reports
    with and ``label`` its public identity (what reads show as ``agent_id``)."""
    view = public(sub)
    view["label"] = view["agent_id"]
    view["agent_id"] = credential
    return view


def supersede(sub) -> None:
    """Retire the current owner: its label and host id join ``past_agents``, its credential's hash
    ``past_secrets``, so its late report is recognised (and refused) as superseded."""
    past = sub.setdefault("past_agents", [])
    past.extend(a for a in (sub["agent_id"], sub.pop("host_agent_id", None)) if a and a not in past)
    hashed = sub.pop("secret_hash", None)
    if hashed:
        sub.setdefault("past_secrets", []).append([sub["agent_id"], hashed])
