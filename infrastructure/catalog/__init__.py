"""Registered process definitions, kept in the read-model database (`SqlProcessCatalog`).

Imports the application, the domain and the read models' tables; the checks a
definition passes at registration are given to it by the runtime.
"""
