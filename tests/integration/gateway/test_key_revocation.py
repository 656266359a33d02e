"""`rlm-rs keys revoke` takes effect at once: the next call with the key is
refused (401 UNAUTHORIZED) by the running control plane, which keeps no
cache of authenticated keys."""

from __future__ import annotations

from tests.integration.gateway.conftest import Stack, rlm


def test_a_revoked_key_is_refused_at_once(stack: Stack) -> None:
    data = ["--data-dir", str(stack.data_dir)]
    key = rlm(stack.env, "keys", "create", "--tenant", "t1", "--name", "revoke-me", *data).splitlines()[-1]
    with stack.client(key) as client:
        assert client.get(f"/v1/sessions/{stack.session_id}").status_code == 200
        rlm(stack.env, "keys", "revoke", key[:12], *data)
        refused = client.get(f"/v1/sessions/{stack.session_id}")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHORIZED"
    with stack.client() as client:  # the tenant's other keys are untouched
        assert client.get(f"/v1/sessions/{stack.session_id}").status_code == 200
