"""Fault injection on a local CDF for tests: /_local/faults needs a bearer token like the API, sent as the SDK does."""
from __future__ import annotations

import requests

TOKEN = "local-token"  # what LocalCDF.client() and the open-mode server accept


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def inject(base_url: str, rules: list, token: str = TOKEN) -> list[dict]:
    """Add fault rules; the server's rules after the change."""
    response = requests.post(f"{base_url}/_local/faults", json={"rules": list(rules)}, headers=_auth(token),
                             timeout=10)
    response.raise_for_status()
    return response.json()["rules"]


def rules(base_url: str, token: str = TOKEN) -> list[dict]:
    response = requests.get(f"{base_url}/_local/faults", headers=_auth(token), timeout=10)
    response.raise_for_status()
    return response.json()["rules"]


def clear(base_url: str, token: str = TOKEN) -> None:
    requests.delete(f"{base_url}/_local/faults", headers=_auth(token), timeout=10).raise_for_status()
