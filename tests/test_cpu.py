"""samplewise.cpu: the allocator settings are applied by the command, can be turned off, and
do nothing harmful where glibc is absent."""

from __future__ import annotations

import subprocess
import sys

import pytest

import samplewise.cpu as cpu

GLIBC = cpu._glibc() is not None

PROBE = ("import samplewise.cpu as c, samplewise.cli as cli; "
         "cli.main(['--quiet', 'list']); print(c.allocator_state())")


def run_probe(env_value=None):
    import os
    env = dict(os.environ)
    env.pop(cpu.ENV, None)
    if env_value is not None:
        env[cpu.ENV] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not GLIBC, reason="needs Linux with glibc (mallopt)")
def test_the_command_tunes_the_allocator_and_the_env_turns_it_off():
    assert run_probe() == "tuned (mallopt)"
    assert run_probe("default") == f"default ({cpu.ENV}=default)"


def test_no_glibc_means_no_change(monkeypatch):
    monkeypatch.setattr(cpu, "_glibc", lambda: None)
    monkeypatch.setitem(cpu._state, "tuned", False)
    monkeypatch.delenv(cpu.ENV, raising=False)
    assert cpu.tune_allocator() is False
    assert cpu.allocator_state() == "default (not Linux with glibc)"
