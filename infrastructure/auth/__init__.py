"""Bearer tokens (JWT): issuing, checking, roles, and revocations kept in the database.

Imports the read models' tables only; the API and the CLI use it.
"""
