"""``sealtrail keys admin-token`` while a server runs: the server read the token's hash at
start, so until it is restarted it takes the old token and not the new one. The command
prints the new token alone on stdout and says so on stderr, after it (docs/auth.md)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests._serve_proc import bearer, init_data, served
from tests.integration.test_cli import sealtrail


def _admin(url: str, token: str) -> int:
    return httpx.get(url + "/admin/users", headers=bearer(token), timeout=30).status_code


def test_a_new_administrator_token_takes_over_once_the_server_restarts(tmp_path: Path) -> None:
    root, old = init_data(tmp_path)
    with served(root) as url:
        assert _admin(url, old) == 200
        result = sealtrail("keys", "admin-token", "-d", "d", cwd=root)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("\n") == 1  # the token alone, for a script to capture
        new = result.stdout.strip()
        assert new and new != old and new not in result.stderr
        said = result.stderr.strip().splitlines()
        assert "shown once" in said[0]
        assert "Restart every server" in said[-1] and "old token" in said[-1]
        # What it says: the running server still takes the old token only.
        assert _admin(url, old) == 200
        assert _admin(url, new) == 401
    with served(root) as url:
        assert _admin(url, new) == 200
        assert _admin(url, old) == 401
