"""Dashboard pages, one module per resource. Views scope every query with
``tenancy.access``, parse forms, and call the same services as the API; they never
validate on their own.

Scoping rules (the API's): staff see everything; a tenant member sees their
tenants' objects only; another tenant's object by id is a 404; viewers read,
editors change routes, pools, certificates and alert channels, owners also
members and API tokens (a forbidden write is a 403).
"""
