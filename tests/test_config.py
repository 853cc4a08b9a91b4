"""Settings from the environment, and the demo-key guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import DEFAULT_POS, Settings


def test_environment_overrides_defaults() -> None:
    s = Settings.from_env(
        {
            "ARBITER_PORT": "9000",
            "ARBITER_PUBLIC_KEY": "eu=k1,k2",
            "ARBITER_MAX_ORDERS": "5",
            "ARBITER_DECISION_LOG_MAXLEN": "2000",
            "ARBITER_MODELS_DIR": "models",
            "ARBITER_CONTEXT_IDS": "ctx=eu",
            "ARBITER_REDIS_URL": "",  # empty means unset
        }
    )
    assert (s.port, s.max_orders, s.models_dir, s.redis_url) == (9000, 5, Path("models"), None)
    assert s.decision_log_maxlen == 2000
    assert s.public_keys == {"k1": "eu", "k2": DEFAULT_POS}
    assert s.context_ids == {"ctx": "eu"}
    assert Settings.from_env({"ARBITER_PORT": "9000"}, port=7000).port == 7000


def test_demo_keys_are_refused_off_loopback() -> None:
    Settings(host="127.0.0.1").check_bind()
    with pytest.raises(SystemExit, match="demo keys"):
        Settings(host="0.0.0.0").check_bind()
    Settings(host="0.0.0.0", admin_key="secret-a", public_keys={"secret-p": DEFAULT_POS}).check_bind()
