"""Passwords: the policy they must meet, and argon2id hashing (``argon2-cffi``).

Threat model: a stolen database must not give the passwords away (argon2id, memory-hard,
each hash salted), a guessed common password must not open an account (the list shipped
in ``common-passwords.txt``, a minimum length), and nothing may leak one: no password is
ever logged, put in an exception message or on the ledger.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from archiver.people.errors import WeakPassword

MAX_PASSWORD_LENGTH = 1024
"""Hashing a longer one costs nothing more, but nobody types it: a bound on input."""

_HASHER = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) defaults


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lower-cased."""
    text = resources.files("archiver.people").joinpath("common-passwords.txt").read_text(
        encoding="utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    )


def check_password(password: str, *, login: str, min_length: int) -> None:
    """Refuse (:class:`WeakPassword`, naming the rule) a password that is too short or too
    long, one of the common passwords, or the login name; comparisons ignore case."""
    if len(password) < min_length:
        raise WeakPassword(f"the password is too short: at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"the password is too long: at most {MAX_PASSWORD_LENGTH} "
                           "characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise WeakPassword("the password is not valid text (bytes that are not UTF-8)") \
            from None
    folded = password.casefold()
    if folded == login.casefold():
        raise WeakPassword("the password is the login name; choose another")
    if folded in common_passwords():
        raise WeakPassword("the password is one of the most common passwords; choose "
                           "another")


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string, salt and parameters included)."""
    return _HASHER.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """Whether ``password`` matches ``hashed`` (constant time in the password)."""
    try:
        return _HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    """Whether ``hashed`` was made with weaker parameters than today's defaults."""
    try:
        return _HASHER.check_needs_rehash(hashed)
    except InvalidHashError:
        return True


@cache
def dummy_hash() -> str:
    """A hash to verify against when the login is unknown, so that the answer takes as
    long as for a known login (no timing oracle for which login names exist)."""
    return _HASHER.hash("not a password anyone has: the unknown-login timing stand-in")
