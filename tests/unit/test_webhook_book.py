"""Webhook rows on SQLite: the secret encrypted at rest with a cipher key, signatures."""

from __future__ import annotations

import hashlib
import hmac

import sqlalchemy as sa
from eventsourcing.cipher import AESCipher

from agent_ledger.infrastructure.read_models.tables import metadata, webhooks
from agent_ledger.infrastructure.webhooks.book import SqlWebhooks
from agent_ledger.infrastructure.webhooks.deliverer import signature

SECRET = "a-secret-of-ann-s-webhook"


def test_with_a_cipher_key_the_secret_is_encrypted_at_rest_and_still_signs() -> None:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    book = SqlWebhooks(engine, AESCipher.create_key(32))
    book.put("ann", "ops", url="http://127.0.0.1/h", types=[], secret=SECRET, head=0)
    with engine.connect() as connection:
        stored = connection.execute(sa.select(webhooks.c.secret)).scalar_one()
    assert SECRET not in stored
    hook = book.get("ann", "ops")
    assert hook.secret == SECRET
    assert SECRET not in repr(hook)
    assert SqlWebhooks(engine).get("ann", "ops").secret == stored  # no key, no secret


def test_the_signature_is_the_hmac_sha256_of_the_body_in_hex() -> None:
    body = b'{"position":7}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert signature(SECRET, body) == f"sha256={expected}"
