"""A small in-memory Codat for in-process tests of the connect pages: the few
Platform API operations they use, answered in the spec's shapes (field names
from Codat-Platform.json: Integration, Branding, Connection)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

PLATFORMS = {
    "gbol": {"name": "Xero", "sourceType": "Accounting"},
    "qhyg": {"name": "QuickBooks Online", "sourceType": "Accounting"},
    "dfxm": {"name": "Basiq", "sourceType": "Banking"},
}
LINKS = {"self": {"href": "/x"}, "current": {"href": "/x"}}


def integration(key: str) -> dict[str, Any]:
    p = PLATFORMS[key]
    return {
        "key": key,
        "logoUrl": f"https://static.codat.io/public/officialLogos/Square/{key}.png",
        "name": p["name"],
        "enabled": True,
        "sourceType": p["sourceType"],
        "integrationId": str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
        "sourceId": str(uuid.uuid5(uuid.NAMESPACE_DNS, key)),
    }


def branding(key: str) -> dict[str, Any]:
    src = f"https://static.codat.io/public/officialLogos/Square/{key}.png"
    return {
        "logo": {"square": {"image": {"src": src, "alt": f"{key} square icon"}}},
        "button": {"default": {"image": {"src": src, "alt": "button"}}},
        "sourceId": str(uuid.uuid5(uuid.NAMESPACE_DNS, key)),
    }


@dataclass
class FakeCodat:
    connections: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def add_connection(self, company_id: str, key: str, status: str = "Linked") -> dict[str, Any]:
        cid = str(uuid.uuid4())
        info = integration(key)
        connection = {
            "id": cid,
            "integrationId": info["integrationId"],
            "integrationKey": key,
            "sourceId": info["sourceId"],
            "platformName": info["name"],
            "linkUrl": f"https://link-api.codat.io/companies/{company_id}/connections/{cid}/start?otp=1",
            "status": status,
            "created": "2026-01-05T09:00:00Z",
            "sourceType": info["sourceType"],
        }
        self.connections.setdefault(company_id, {})[cid] = connection
        return connection

    def handler(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        self.calls.append(f"{method} {path}")
        m = re.fullmatch(r"/integrations/(\w+)/branding", path)
        if m and method == "GET":
            return httpx.Response(200, json=branding(m.group(1)))
        m = re.fullmatch(r"/integrations/(\w+)", path)
        if m and method == "GET":
            if m.group(1) not in PLATFORMS:
                return httpx.Response(404, json={"statusCode": 404, "error": "not found"})
            return httpx.Response(200, json=integration(m.group(1)))
        if path == "/integrations":
            query = request.url.params.get("query") or ""
            wanted = re.search(r"sourceType=(\w+)", query)
            results = [
                integration(k)
                for k, p in PLATFORMS.items()
                if not wanted or p["sourceType"] == wanted.group(1)
            ]
            return _page(results)
        m = re.fullmatch(r"/companies/([\w-]+)/connections", path)
        if m and method == "POST":
            key = json.loads(request.content)["platformKey"]
            return httpx.Response(200, json=self.add_connection(m.group(1), key, "PendingAuth"))
        if m and method == "GET":
            results = list(self.connections.get(m.group(1), {}).values())
            return _page(results)
        m = re.fullmatch(r"/companies/([\w-]+)/connections/([\w-]+)", path)
        if m:
            found = self.connections.get(m.group(1), {}).get(m.group(2))
            if found is None:
                return httpx.Response(404, json={"statusCode": 404, "error": "not found"})
            if method == "PATCH":
                found["status"] = json.loads(request.content).get("status", found["status"])
            if method == "DELETE":
                del self.connections[m.group(1)][m.group(2)]
                return httpx.Response(200)
            return httpx.Response(200, json=found)
        return httpx.Response(404, json={"statusCode": 404, "error": f"no fake for {path}"})


def _page(results: list) -> httpx.Response:
    """One page holding every result, as Codat's list endpoints answer."""
    return httpx.Response(
        200,
        json={
            "results": results,
            "pageNumber": 1,
            "pageSize": 200,
            "totalResults": len(results),
            "_links": LINKS,
        },
    )
