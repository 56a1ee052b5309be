"""Every PERSONALAB_* variable is validated in one place; a bad value names the variable."""

import subprocess
import sys

import pytest

from personalab.config import ConfigError, settings


def test_defaults_and_types(monkeypatch):
    for var in ("PERSONALAB_THREADS", "PERSONALAB_PROFILE", "PERSONALAB_BF16_GENERATION", "PERSONALAB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    s = settings()
    assert s.threads == 1 and s.profile == "full" and s.bf16_generation is True and s.cache is None
    monkeypatch.setenv("PERSONALAB_THREADS", "8")
    monkeypatch.setenv("PERSONALAB_BF16_GENERATION", "0")
    monkeypatch.setenv("PERSONALAB_PROFILE", "ci")
    s = settings()
    assert s.threads == 8 and s.bf16_generation is False and s.profile == "ci"


@pytest.mark.parametrize(
    "var,value,expected",
    [
        ("PERSONALAB_THREADS", "abc", "whole number >= 1"),
        ("PERSONALAB_THREADS", "0", "whole number >= 1"),
        ("PERSONALAB_PROFILE", "fast", "'full' or 'ci'"),
        ("PERSONALAB_BF16_SCORING", "maybe", "0 (off) or 1 (on)"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch, var, value, expected):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        settings()
    assert f"{var}='{value}' is not valid: expected" in str(err.value) and expected in str(err.value)


def test_an_unknown_variable_is_flagged(monkeypatch):
    monkeypatch.setenv("PERSONALAB_THREAD", "2")
    with pytest.warns(UserWarning, match="PERSONALAB_THREAD is not a personalab setting"):
        settings()


def test_import_changes_no_torch_setting_and_survives_a_bad_value():
    """`import personalab` leaves torch's thread count alone, even with PERSONALAB_THREADS=abc;
    the bad value is reported when a model is loaded."""
    code = (
        "import torch; before = torch.get_num_threads(); import personalab; "
        "assert torch.get_num_threads() == before, 'import changed torch threads'; "
        "from personalab.config import ConfigError\n"
        "try:\n    personalab.tiny_model()\nexcept ConfigError as e:\n    print('ConfigError', e)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PERSONALAB_THREADS": "abc", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ConfigError PERSONALAB_THREADS='abc' is not valid" in out.stdout
