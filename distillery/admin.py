"""``client.teams`` and ``client.keys``: the admin's routes (a team key gets 403)."""

from __future__ import annotations

from collections.abc import Iterator

from distillery._resource import Resource
from distillery.types import ApiKey, Team


class Teams(Resource):
    def create(
        self,
        name: str,
        max_running_jobs: int = 1,
        weight: float | None = None,
        max_running_devices: int | None = None,
    ) -> Team:
        """A new team; ``max_running_devices`` caps the devices its running jobs hold together
        (None: no limit beyond ``max_running_jobs``)."""
        body: dict[str, object] = {"name": name, "max_running_jobs": max_running_jobs}
        if weight is not None:
            body["weight"] = weight
        if max_running_devices is not None:
            body["max_running_devices"] = max_running_devices
        response = self._transport.request("POST", "/v1/teams", json=body)
        return Team.model_validate(response.json())

    def list(self) -> Iterator[Team]:
        return self._pages("/v1/teams", Team.model_validate)


class Keys(Resource):
    def create(self, team_id: str, name: str) -> ApiKey:
        """A new key for the team; ``.key`` is the secret, shown this once."""
        response = self._transport.request("POST", f"/v1/teams/{team_id}/keys", json={"name": name})
        return ApiKey.model_validate(response.json())

    def revoke(self, key_id: str) -> None:
        self._transport.request("DELETE", f"/v1/keys/{key_id}")
