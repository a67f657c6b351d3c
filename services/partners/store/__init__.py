"""Storage of the partners service: one module per aggregate, tables in tables.py. Use cases
call these functions and never write SQL themselves."""
