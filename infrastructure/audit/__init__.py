"""Audit on the stores: auditors' reads, signed checkpoints, export bundles.

Imports the application, the domain, the store and the read models' tables; nothing
from the API or the CLI.
"""
