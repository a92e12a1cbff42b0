"""HTTP plumbing: the WSGI app and routing (app), bearer tokens and OAuth (auth), CDF's error envelope (errors),
request checks (validation), the standard routes every resource kind shares (resources.Kind), fault injection
(faults) and the health probe (health). Knows no resource: api/ declares those on top of it."""
